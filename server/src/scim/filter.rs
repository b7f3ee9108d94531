//! SCIM filters (RFC 7644 §3.4.2.2), parsed by `scim_v2` and evaluated here
//! against a resource as it is served: attribute names match in any case,
//! strings compare without case except the case-exact ones (`id`,
//! `externalId`, references), a multi-valued attribute matches when one of
//! its values does.

use scim_v2::filter::{AttrExp, AttrPath, CompValue, CompareOp, Filter, ValFilter};
use serde_json::Value;

use super::ScimError;

/// Parses a filter. What identity providers send outside the grammar is
/// read as they mean it: Entra's unquoted values (`externalId eq alovelace`)
/// and a sub-attribute after a value path
/// (`emails[type eq "work"].value eq "a@b.c"`).
pub fn parse(raw: &str) -> Result<Filter, ScimError> {
    raw.parse::<Filter>().or_else(|strict| {
        lenient(raw)
            .and_then(|fixed| fixed.parse::<Filter>().ok())
            .ok_or_else(|| ScimError::invalid_filter(format!("filter: {strict}")))
    })
}

const OPS: [&str; 9] = ["eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le"];

/// The filter with bare values quoted and `a[f].b op v` as `a[f and b op v]`;
/// `None` when nothing needed it.
fn lenient(raw: &str) -> Option<String> {
    let words: Vec<&str> = raw.split(' ').collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len());
    let mut changed = false;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        // `emails[type eq "work"].value eq "x"`: the closing word ends in `].sub`.
        if let Some((head, sub)) = w.rsplit_once("].") {
            let op = words.get(i + 1).copied().unwrap_or_default();
            if !sub.is_empty()
                && sub.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && OPS.contains(&op.to_ascii_lowercase().as_str())
            {
                if let Some(value) = words.get(i + 2) {
                    out.push(format!("{head} and {sub} {op} {}]", quoted(value)));
                    changed = true;
                    i += 3;
                    continue;
                }
            }
        }
        out.push(w.to_owned());
        if OPS.contains(&w.to_ascii_lowercase().as_str()) {
            if let Some(value) = words.get(i + 1).filter(|v| !v.contains("].")) {
                let q = quoted(value);
                changed |= q != *value;
                out.push(q);
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    changed.then(|| out.join(" "))
}

/// A comparison value as the grammar wants it: strings in quotes (closing
/// brackets and parentheses stay outside).
fn quoted(value: &str) -> String {
    let trimmed = value.trim_end_matches([')', ']']);
    let tail = &value[trimmed.len()..];
    let literal = trimmed.starts_with('"')
        || matches!(trimmed, "true" | "false" | "null")
        || trimmed.parse::<f64>().is_ok()
        || trimmed.is_empty();
    if literal {
        value.to_owned()
    } else {
        format!("\"{}\"{tail}", trimmed.replace('"', "\\\""))
    }
}

/// The value of `name` in an object, in any case.
pub fn get<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Where an attribute path starts: the resource itself, or its extension.
fn base<'a>(resource: &'a Value, path: &AttrPath) -> Option<&'a Value> {
    match &path.uri {
        Some(uri) if get(resource, uri).is_some() => get(resource, uri),
        Some(uri)
            if uri.eq_ignore_ascii_case(super::schema::USER)
                || uri.eq_ignore_ascii_case(super::schema::GROUP) =>
        {
            Some(resource)
        }
        Some(_) => None,
        None => Some(resource),
    }
}

/// Every value the path names (a multi-valued attribute gives each value;
/// a complex one without a sub-attribute compares its `value`).
fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(top) = base(resource, path).and_then(|b| get(b, &path.name)) else {
        return Vec::new();
    };
    let items: Vec<&Value> = match top {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .filter_map(|v| match (&path.sub_attr, v) {
            (Some(sub), _) => get(v, sub),
            (None, Value::Object(_)) => get(v, "value"),
            (None, _) => Some(v),
        })
        .collect()
}

fn case_exact(path: &AttrPath) -> bool {
    let name = path.sub_attr.as_deref().unwrap_or(&path.name);
    name.eq_ignore_ascii_case("id")
        || name.eq_ignore_ascii_case("externalId")
        || name == "$ref"
        || (path.sub_attr.is_none() && path.name.eq_ignore_ascii_case("value"))
}

fn compare(v: &Value, op: &CompareOp, want: &CompValue, exact: bool) -> bool {
    use std::cmp::Ordering;
    match (v, want) {
        (Value::String(s), CompValue::Str(w)) => {
            let (a, b) = if exact {
                (s.clone(), w.clone())
            } else {
                (s.to_lowercase(), w.to_lowercase())
            };
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Co => a.contains(&b),
                CompareOp::Sw => a.starts_with(&b),
                CompareOp::Ew => a.ends_with(&b),
                CompareOp::Gt => a.cmp(&b) == Ordering::Greater,
                CompareOp::Lt => a.cmp(&b) == Ordering::Less,
                CompareOp::Ge => a.cmp(&b) != Ordering::Less,
                CompareOp::Le => a.cmp(&b) != Ordering::Greater,
            }
        }
        (Value::Bool(x), CompValue::True | CompValue::False) => {
            let w = matches!(want, CompValue::True);
            match op {
                CompareOp::Eq => *x == w,
                CompareOp::Ne => *x != w,
                _ => false,
            }
        }
        (Value::Number(n), CompValue::Number(w)) => {
            let (Some(a), Some(b)) = (n.as_f64(), w.as_f64()) else {
                return false;
            };
            match op {
                CompareOp::Eq => a == b,
                CompareOp::Ne => a != b,
                CompareOp::Gt => a > b,
                CompareOp::Lt => a < b,
                CompareOp::Ge => a >= b,
                CompareOp::Le => a <= b,
                _ => false,
            }
        }
        (_, CompValue::Null) => matches!(op, CompareOp::Ne),
        _ => matches!(op, CompareOp::Ne),
    }
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn attr_matches(resource: &Value, exp: &AttrExp) -> bool {
    match exp {
        AttrExp::Present(path) if path.sub_attr.is_none() => base(resource, path)
            .and_then(|b| get(b, &path.name))
            .is_some_and(present),
        AttrExp::Present(path) => values(resource, path).into_iter().any(present),
        AttrExp::Comparison(path, op, want) => {
            let vals = values(resource, path);
            if matches!(want, CompValue::Null) {
                let some = vals.iter().any(|v| present(v));
                return match op {
                    CompareOp::Eq => !some,
                    CompareOp::Ne => some,
                    _ => false,
                };
            }
            let exact = case_exact(path);
            match op {
                // "ne" holds when no value equals.
                CompareOp::Ne => !vals.iter().any(|v| compare(v, &CompareOp::Eq, want, exact)),
                _ => vals.iter().any(|v| compare(v, op, want, exact)),
            }
        }
    }
}

fn val_matches(item: &Value, f: &ValFilter) -> bool {
    match f {
        ValFilter::Attr(exp) => attr_matches(item, exp),
        ValFilter::Not(inner) => !val_matches(item, inner),
        ValFilter::And(ops) => ops.iter().all(|x| val_matches(item, x)),
        ValFilter::Or(ops) => ops.iter().any(|x| val_matches(item, x)),
    }
}

/// The elements of a multi-valued attribute that a value filter selects.
pub fn select(items: &[Value], f: &ValFilter) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, v)| val_matches(v, f))
        .map(|(i, _)| i)
        .collect()
}

pub fn matches(resource: &Value, f: &Filter) -> bool {
    match f {
        Filter::Attr(exp) => attr_matches(resource, exp),
        Filter::ValuePath(vp) => {
            let Some(top) = base(resource, &vp.attr).and_then(|b| get(b, &vp.attr.name)) else {
                return false;
            };
            match top {
                Value::Array(items) => !select(items, &vp.filter).is_empty(),
                other => val_matches(other, &vp.filter),
            }
        }
        Filter::Not(inner) => !matches(resource, inner),
        Filter::And(ops) => ops.iter().all(|x| matches(resource, x)),
        Filter::Or(ops) => ops.iter().any(|x| matches(resource, x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(resource: &Value, f: &str) -> bool {
        matches(resource, &parse(f).unwrap())
    }

    #[test]
    fn filters_match_as_rfc_7644_says() {
        let u = json!({
            "id": "Ab1", "userName": "Alice@Example.com", "externalId": "X1", "active": true,
            "name": { "givenName": "Alice" },
            "emails": [{ "value": "alice@example.com", "type": "work", "primary": true },
                       { "value": "a@home.example", "type": "home" }],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": { "department": "R&D" },
        });
        assert!(
            m(&u, r#"userName eq "alice@example.com""#),
            "caseExact false"
        );
        assert!(!m(&u, r#"externalId eq "x1""#), "externalId is case-exact");
        assert!(m(&u, r#"externalId eq "X1" and active eq true"#));
        assert!(m(&u, r#"id eq "nope" or name.givenName sw "ali""#));
        assert!(m(
            &u,
            r#"emails[type eq "work" and value co "example.com"]"#
        ));
        assert!(!m(&u, r#"emails[type eq "home" and primary eq true]"#));
        assert!(m(&u, r#"emails.value eq "a@home.example""#));
        assert!(
            m(&u, r#"emails eq "a@home.example""#),
            "complex without sub: its value"
        );
        assert!(m(&u, "title pr or name pr"));
        assert!(!m(&u, "title pr"));
        assert!(m(&u, r#"not (userName eq "bob")"#));
        assert!(m(
            &u,
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "r&d""#
        ));
        assert!(m(&u, r#"userName ne "bob""#));
        assert!(parse(r#"userName eq"#).is_err());
        // What Entra sends outside the grammar.
        assert!(m(&u, "externalId eq X1"));
        assert!(m(
            &u,
            r#"emails[type eq "work"].value eq "alice@example.com""#
        ));
        assert!(!m(
            &u,
            r#"emails[type eq "home"].value eq "alice@example.com""#
        ));
        assert!(m(&u, r#"(externalId eq X1) and active eq true"#));
    }
}
