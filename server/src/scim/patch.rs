//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource as it is served; the
//! result is then stored as a PUT of it would be. Operation names match in
//! any case (Entra sends "Replace"); a value without a path may carry dotted
//! names ("name.givenName") or an extension's URN as keys.

use scim_v2::filter::{AttrPath, CompValue, CompareOp, PatchPath, ValFilter};
use serde_json::{Map, Value};

use super::filter::{get, select};
use super::ScimError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Add,
    Replace,
    Remove,
}

/// Applies the body's operations to `doc`, in order; all or nothing.
pub fn apply(doc: &mut Value, body: &Value) -> Result<(), ScimError> {
    let schemas = get(body, "schemas").and_then(Value::as_array);
    if !schemas.is_some_and(|s| {
        s.iter()
            .any(|x| x.as_str() == Some(super::schema::PATCH_OP))
    }) {
        return Err(ScimError::invalid_syntax(format!(
            "schemas: a PATCH body names '{}'",
            super::schema::PATCH_OP
        )));
    }
    let ops = get(body, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("Operations: expected a list of operations"))?;
    let mut work = doc.clone();
    for (i, o) in ops.iter().enumerate() {
        let name = get(o, "op").and_then(Value::as_str).unwrap_or_default();
        let op = match name.to_ascii_lowercase().as_str() {
            "add" => Op::Add,
            "replace" => Op::Replace,
            "remove" => Op::Remove,
            _ => {
                return Err(ScimError::invalid_syntax(format!(
                    "Operations[{i}].op: '{name}' is not add, replace or remove"
                )))
            }
        };
        let value = get(o, "value").cloned();
        let path = get(o, "path")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|p| !p.is_empty());
        match path {
            // The extension as a whole: its attributes merged, or it removed.
            Some(urn) if urn.eq_ignore_ascii_case(super::schema::ENTERPRISE) => {
                whole_extension(&mut work, op, urn, value)?;
            }
            Some(path) => {
                let parsed = path
                    .trim()
                    .parse::<PatchPath>()
                    .map_err(|e| ScimError::invalid_path(format!("Operations[{i}].path: {e}")))?;
                at_path(&mut work, op, &parsed, value)?;
            }
            None => {
                if op == Op::Remove {
                    return Err(ScimError::no_target(format!(
                        "Operations[{i}]: remove needs a path"
                    )));
                }
                let Some(Value::Object(fields)) = value else {
                    return Err(ScimError::invalid_value(format!(
                        "Operations[{i}].value: without a path, an object of attributes"
                    )));
                };
                without_path(&mut work, op, fields)?;
            }
        }
    }
    *doc = work;
    Ok(())
}

fn whole_extension(
    doc: &mut Value,
    op: Op,
    urn: &str,
    value: Option<Value>,
) -> Result<(), ScimError> {
    if op == Op::Remove {
        if let Some(obj) = doc.as_object_mut() {
            obj.retain(|k, _| !k.eq_ignore_ascii_case(urn));
        }
        return Ok(());
    }
    let Some(Value::Object(fields)) = value else {
        return Err(ScimError::invalid_value(format!(
            "{urn}: expected an object of its attributes"
        )));
    };
    let target = container(doc, Some(urn), true)?;
    for (k, v) in fields {
        set_attr(target, op, &k, None, v)?;
    }
    Ok(())
}

fn without_path(doc: &mut Value, op: Op, fields: Map<String, Value>) -> Result<(), ScimError> {
    for (key, v) in fields {
        let is_ext = key.starts_with("urn:") && v.is_object();
        let core = key.eq_ignore_ascii_case(super::schema::USER)
            || key.eq_ignore_ascii_case(super::schema::GROUP);
        if core {
            if let Value::Object(inner) = v {
                without_path(doc, op, inner)?;
            }
        } else if is_ext {
            let target = container(doc, Some(&key), true)?;
            if let Value::Object(inner) = v {
                for (k, val) in inner {
                    set_attr(target, op, &k, None, val)?;
                }
            }
        } else {
            let path = key
                .parse::<PatchPath>()
                .map_err(|e| ScimError::invalid_path(format!("value.{key}: {e}")))?;
            at_path(doc, op, &path, Some(v))?;
        }
    }
    Ok(())
}

/// The object an attribute path starts in: the resource, or its extension
/// (made when `create`).
fn container<'a>(
    doc: &'a mut Value,
    uri: Option<&str>,
    create: bool,
) -> Result<&'a mut Value, ScimError> {
    let Some(uri) = uri.filter(|u| {
        !u.eq_ignore_ascii_case(super::schema::USER)
            && !u.eq_ignore_ascii_case(super::schema::GROUP)
    }) else {
        return Ok(doc);
    };
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_syntax("the resource is not an object"))?;
    let key = obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case(uri))
        .cloned()
        .unwrap_or_else(|| uri.to_owned());
    if !obj.contains_key(&key) {
        if !create {
            return Err(ScimError::no_target(format!("{uri}: not set")));
        }
        obj.insert(key.clone(), Value::Object(Map::new()));
    }
    obj.get_mut(&key)
        .ok_or_else(|| ScimError::no_target(format!("{uri}: not set")))
}

fn key_in(obj: &Map<String, Value>, name: &str) -> Option<String> {
    obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
}

fn at_path(
    doc: &mut Value,
    op: Op,
    path: &PatchPath,
    value: Option<Value>,
) -> Result<(), ScimError> {
    match path {
        PatchPath::Attr(AttrPath {
            uri,
            name,
            sub_attr,
        }) => {
            // Removing from an extension the user does not have: nothing to do.
            let Ok(target) = container(doc, uri.as_deref(), op != Op::Remove) else {
                return Ok(());
            };
            match (op, value) {
                (Op::Remove, v) => remove_attr(target, name, sub_attr.as_deref(), v),
                (_, Some(v)) => set_attr(target, op, name, sub_attr.as_deref(), v),
                (_, None) => Err(ScimError::invalid_value(format!(
                    "{name}: the operation needs a value"
                ))),
            }
        }
        PatchPath::Value(vp) => {
            let Ok(target) = container(doc, vp.attr.uri.as_deref(), op != Op::Remove) else {
                return Ok(());
            };
            let obj = target.as_object_mut().ok_or_else(|| {
                ScimError::invalid_path(format!("{}: not an object", vp.attr.name))
            })?;
            let key = key_in(obj, &vp.attr.name);
            let items = match key.as_ref().and_then(|k| obj.get_mut(k)) {
                Some(Value::Array(items)) => items,
                _ if op == Op::Remove => return Ok(()),
                _ => {
                    let k = key.unwrap_or_else(|| vp.attr.name.clone());
                    obj.insert(k.clone(), Value::Array(Vec::new()));
                    match obj.get_mut(&k) {
                        Some(Value::Array(items)) => items,
                        _ => {
                            return Err(ScimError::invalid_path(format!(
                                "{}: not multi-valued",
                                vp.attr.name
                            )))
                        }
                    }
                }
            };
            let hits = select(items, &vp.filter);
            match op {
                Op::Remove => {
                    match &vp.sub_attr {
                        Some(sub) => {
                            for i in hits {
                                if let Some(Value::Object(o)) = items.get_mut(i) {
                                    if let Some(k) = key_in(o, sub) {
                                        o.remove(&k);
                                    }
                                }
                            }
                        }
                        None => {
                            let mut i = 0;
                            items.retain(|_| {
                                let keep = !hits.contains(&i);
                                i += 1;
                                keep
                            });
                        }
                    }
                    Ok(())
                }
                Op::Add | Op::Replace => {
                    let v = value.ok_or_else(|| {
                        ScimError::invalid_value(format!(
                            "{}: the operation needs a value",
                            vp.attr.name
                        ))
                    })?;
                    if hits.is_empty() {
                        // Entra replaces `emails[type eq "work"].value` on a
                        // user who has no work email yet: the element is made.
                        let Some(seed) = equality_seed(&vp.filter) else {
                            return Err(ScimError::no_target(format!(
                                "{}: no value matches the filter",
                                vp.attr.name
                            )));
                        };
                        let mut item = Map::new();
                        item.insert(seed.0, seed.1);
                        let mut item = Value::Object(item);
                        match &vp.sub_attr {
                            Some(sub) => set_attr(&mut item, Op::Replace, sub, None, v)?,
                            None => merge(&mut item, v),
                        }
                        items.push(item);
                        return Ok(());
                    }
                    for i in hits {
                        if let Some(item) = items.get_mut(i) {
                            match &vp.sub_attr {
                                Some(sub) => set_attr(item, Op::Replace, sub, None, v.clone())?,
                                None => merge(item, v.clone()),
                            }
                        }
                    }
                    Ok(())
                }
            }
        }
    }
}

/// `type eq "work"` gives ("type", "work"): what a new element starts with.
fn equality_seed(f: &ValFilter) -> Option<(String, Value)> {
    match f {
        ValFilter::Attr(scim_v2::filter::AttrExp::Comparison(
            p,
            CompareOp::Eq,
            CompValue::Str(s),
        )) if p.sub_attr.is_none() => Some((p.name.clone(), Value::String(s.clone()))),
        _ => None,
    }
}

fn merge(target: &mut Value, v: Value) {
    match (target, v) {
        (Value::Object(t), Value::Object(v)) => {
            for (k, val) in v {
                let key = key_in(t, &k).unwrap_or(k);
                t.insert(key, val);
            }
        }
        (t, v) => *t = v,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (get(a, "value"), get(b, "value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn set_attr(
    target: &mut Value,
    op: Op,
    name: &str,
    sub: Option<&str>,
    v: Value,
) -> Result<(), ScimError> {
    let obj = target
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_path(format!("{name}: not an object")))?;
    let key = key_in(obj, name).unwrap_or_else(|| name.to_owned());
    if let Some(sub) = sub {
        let inner = obj
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if inner.is_null() {
            *inner = Value::Object(Map::new());
        }
        return set_attr(inner, Op::Replace, sub, None, v);
    }
    match (op, obj.get_mut(&key)) {
        (Op::Add, Some(Value::Array(items))) => {
            let new = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            for n in new {
                if !items.iter().any(|x| same_value(x, &n)) {
                    items.push(n);
                }
            }
        }
        (_, Some(existing @ Value::Object(_))) if v.is_object() => merge(existing, v),
        _ => {
            obj.insert(key, v);
        }
    }
    Ok(())
}

fn remove_attr(
    target: &mut Value,
    name: &str,
    sub: Option<&str>,
    v: Option<Value>,
) -> Result<(), ScimError> {
    let Some(obj) = target.as_object_mut() else {
        return Ok(());
    };
    let Some(key) = key_in(obj, name) else {
        return Ok(());
    };
    match (sub, v, obj.get_mut(&key)) {
        (Some(sub), _, Some(Value::Object(inner))) => {
            if let Some(k) = key_in(inner, sub) {
                inner.remove(&k);
            }
        }
        (Some(sub), _, Some(Value::Array(items))) => {
            for item in items.iter_mut() {
                if let Value::Object(o) = item {
                    if let Some(k) = key_in(o, sub) {
                        o.remove(&k);
                    }
                }
            }
        }
        // Entra: remove the members listed in the value.
        (None, Some(v), Some(Value::Array(items))) => {
            let gone: Vec<Value> = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            items.retain(|x| !gone.iter().any(|g| same_value(x, g)));
        }
        _ => {
            obj.remove(&key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(doc: &mut Value, ops: Value) -> Result<(), ScimError> {
        apply(
            doc,
            &json!({ "schemas": [super::super::schema::PATCH_OP], "Operations": ops }),
        )
    }

    #[test]
    fn entra_and_okta_shapes_apply() {
        let mut u = json!({
            "userName": "a@x.example", "active": true, "name": { "givenName": "A", "familyName": "B" },
            "emails": [{ "value": "a@x.example", "type": "work", "primary": true }],
        });
        patch(&mut u, json!([
            { "op": "Replace", "path": "active", "value": "False" },
            { "op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@x.example" },
            { "op": "Add", "path": "name.familyName", "value": "C" },
            { "op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Ops" },
            { "op": "add", "value": { "title": "Dev", "name.middleName": "M" } },
        ]))
        .unwrap();
        assert_eq!(u["active"], "False", "cleaned to a boolean later");
        assert_eq!(u["emails"][0]["value"], "new@x.example");
        assert_eq!(
            u["name"],
            json!({ "givenName": "A", "familyName": "C", "middleName": "M" })
        );
        assert_eq!(
            u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
            "Ops"
        );
        assert_eq!(u["title"], "Dev");

        let mut g =
            json!({ "displayName": "eng", "members": [{ "value": "u1" }, { "value": "u2" }] });
        patch(&mut g, json!([
            { "op": "add", "path": "members", "value": [{ "value": "u3", "display": "C" }, { "value": "u1" }] },
            { "op": "remove", "path": "members[value eq \"u2\"]" },
            { "op": "Remove", "path": "members", "value": [{ "value": "u3" }] },
            { "op": "replace", "value": { "id": "g1", "displayName": "engineering" } },
        ]))
        .unwrap();
        assert_eq!(g["members"], json!([{ "value": "u1" }]));
        assert_eq!(g["displayName"], "engineering");
    }

    #[test]
    fn bad_operations_are_refused_naming_them() {
        let mut u = json!({ "userName": "a" });
        let e = patch(&mut u, json!([{ "op": "move", "path": "userName" }])).unwrap_err();
        assert!(e.detail.contains("Operations[0].op"), "{}", e.detail);
        let e = patch(&mut u, json!([{ "op": "remove" }])).unwrap_err();
        assert_eq!(e.scim_type, Some("noTarget"));
        let e = patch(
            &mut u,
            json!([{ "op": "add", "path": "emails[", "value": 1 }]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some("invalidPath"));
        assert_eq!(u, json!({ "userName": "a" }), "nothing applied");
    }
}
