//! What Tollgate stores of a SCIM user and group, written once as RFC 7643
//! schema definitions: `/Schemas` serves them, and `clean` keeps exactly
//! these attributes of a request (type-checked, names made canonical).

use serde_json::{json, Map, Value};

use super::ScimError;

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// One attribute definition, compact; `schema_json` spells out the rest.
pub struct Attr {
    pub name: &'static str,
    pub kind: Kind,
    pub multi: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: &'static str,
    pub returned: &'static str,
    pub uniqueness: &'static str,
    pub sub: &'static [Attr],
    pub reference_types: &'static [&'static str],
    /// The only values accepted (RFC 7643 §7 lets a server restrict them).
    pub canonical: &'static [&'static str],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Complex,
    Reference,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Str => "string",
            Kind::Bool => "boolean",
            Kind::Complex => "complex",
            Kind::Reference => "reference",
        }
    }
}

const fn s(name: &'static str) -> Attr {
    Attr {
        name,
        kind: Kind::Str,
        multi: false,
        required: false,
        case_exact: false,
        mutability: "readWrite",
        returned: "default",
        uniqueness: "none",
        sub: &[],
        reference_types: &[],
        canonical: &[],
    }
}

const fn b(name: &'static str) -> Attr {
    Attr {
        kind: Kind::Bool,
        ..s(name)
    }
}

const fn r(name: &'static str, types: &'static [&'static str]) -> Attr {
    Attr {
        kind: Kind::Reference,
        case_exact: true,
        reference_types: types,
        ..s(name)
    }
}

const fn multi(name: &'static str, sub: &'static [Attr]) -> Attr {
    Attr {
        kind: Kind::Complex,
        multi: true,
        sub,
        ..s(name)
    }
}

const fn complex(name: &'static str, sub: &'static [Attr]) -> Attr {
    Attr {
        kind: Kind::Complex,
        sub,
        ..s(name)
    }
}

const TYPED_VALUE: &[Attr] = &[s("value"), s("display"), s("type"), b("primary")];
const EMAIL: &[Attr] = &[
    Attr {
        required: true,
        ..s("value")
    },
    s("display"),
    s("type"),
    b("primary"),
];

pub const USER_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        uniqueness: "server",
        ..s("userName")
    },
    complex(
        "name",
        &[
            s("formatted"),
            s("familyName"),
            s("givenName"),
            s("middleName"),
            s("honorificPrefix"),
            s("honorificSuffix"),
        ],
    ),
    s("displayName"),
    s("nickName"),
    r("profileUrl", &["external"]),
    s("title"),
    s("userType"),
    s("preferredLanguage"),
    s("locale"),
    s("timezone"),
    b("active"),
    // Every account has an email address: required here, as Okta and
    // Entra send it.
    Attr {
        required: true,
        ..multi("emails", EMAIL)
    },
    multi("phoneNumbers", TYPED_VALUE),
    Attr {
        mutability: "readOnly",
        ..multi(
            "groups",
            &[
                Attr {
                    mutability: "readOnly",
                    ..s("value")
                },
                Attr {
                    mutability: "readOnly",
                    ..r("$ref", &["Group"])
                },
                Attr {
                    mutability: "readOnly",
                    ..s("display")
                },
                Attr {
                    mutability: "readOnly",
                    ..s("type")
                },
            ],
        )
    },
];

pub const ENTERPRISE_ATTRS: &[Attr] = &[
    s("employeeNumber"),
    s("costCenter"),
    s("organization"),
    s("division"),
    s("department"),
    complex(
        "manager",
        &[
            s("value"),
            r("$ref", &["User"]),
            Attr {
                mutability: "readOnly",
                ..s("displayName")
            },
        ],
    ),
];

pub const GROUP_ATTRS: &[Attr] = &[
    Attr {
        required: true,
        uniqueness: "server",
        ..s("displayName")
    },
    multi(
        "members",
        &[
            Attr {
                mutability: "immutable",
                ..s("value")
            },
            Attr {
                mutability: "immutable",
                ..r("$ref", &["User", "Group"])
            },
            // Only users are members: groups do not nest.
            Attr {
                mutability: "immutable",
                canonical: &["User"],
                ..s("type")
            },
        ],
    ),
];

fn attr_json(a: &Attr) -> Value {
    let mut v = json!({
        "name": a.name,
        "type": a.kind.as_str(),
        "multiValued": a.multi,
        "description": a.name,
        "required": a.required,
        "caseExact": a.case_exact,
        "mutability": a.mutability,
        "returned": a.returned,
        "uniqueness": a.uniqueness,
    });
    if !a.sub.is_empty() {
        v["subAttributes"] = a.sub.iter().map(attr_json).collect();
    }
    if !a.reference_types.is_empty() {
        v["referenceTypes"] = json!(a.reference_types);
    }
    if !a.canonical.is_empty() {
        v["canonicalValues"] = json!(a.canonical);
    }
    v
}

fn schema_json(base: &str, id: &str, name: &str, attrs: &[Attr]) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": id,
        "name": name,
        "description": format!("{name} as Tollgate stores it"),
        "attributes": attrs.iter().map(attr_json).collect::<Vec<_>>(),
        "meta": { "resourceType": "Schema", "location": format!("{base}/Schemas/{id}") },
    })
}

/// The three schemas, as `/Schemas` lists them.
pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        schema_json(base, USER, "User", USER_ATTRS),
        schema_json(base, GROUP, "Group", GROUP_ATTRS),
        schema_json(base, ENTERPRISE, "EnterpriseUser", ENTERPRISE_ATTRS),
    ]
}

pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "User", "name": "User", "endpoint": "/Users", "description": "A member of the organization",
            "schema": USER,
            "schemaExtensions": [{ "schema": ENTERPRISE, "required": false }],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User") },
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "A group; the connection's mapping turns it into a role or a project",
            "schema": GROUP,
            "schemaExtensions": [],
            "meta": { "resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group") },
        }),
    ]
}

/// Largest page a list returns (`filter.maxResults`).
pub const MAX_RESULTS: usize = 1000;

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/tollgate/tollgate#scim",
        "patch": { "supported": true },
        "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
        "filter": { "supported": true, "maxResults": MAX_RESULTS },
        "changePassword": { "supported": false },
        "sort": { "supported": false },
        "etag": { "supported": false },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A SCIM token (sk-tgs-…) made by an owner on the console's Single sign-on & SCIM page",
            "primary": true,
        }],
        "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
    })
}

/// The definition of `name` (any case) among `attrs`.
pub fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Keeps the attributes of `input` that `attrs` defines, under their
/// canonical names, type-checked. Read-only ones and unknown ones are dropped
/// (RFC 7644 §3.3: a server ignores read-only values). Entra's string
/// booleans ("True", "False") are read as booleans.
pub fn clean(
    attrs: &[Attr],
    input: &Map<String, Value>,
    path: &str,
) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (key, value) in input {
        let Some(a) = find(attrs, key) else { continue };
        if a.mutability == "readOnly" || value.is_null() {
            continue;
        }
        let here = if path.is_empty() {
            a.name.to_owned()
        } else {
            format!("{path}.{}", a.name)
        };
        let v = if a.multi {
            let items = match value {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            let mut kept = Vec::with_capacity(items.len());
            for item in &items {
                if !item.is_null() {
                    kept.push(single(a, item, &here)?);
                }
            }
            if kept.is_empty() {
                continue;
            }
            Value::Array(kept)
        } else {
            single(a, value, &here)?
        };
        out.insert(a.name.to_owned(), v);
    }
    Ok(out)
}

fn single(a: &Attr, v: &Value, path: &str) -> Result<Value, ScimError> {
    let wrong =
        |want: &str| ScimError::invalid_value(format!("{path}: expected {want}, got {}", short(v)));
    match a.kind {
        Kind::Str if !a.canonical.is_empty() => match v {
            Value::String(t) => a
                .canonical
                .iter()
                .find(|c| c.eq_ignore_ascii_case(t))
                .map(|c| json!(c))
                .ok_or_else(|| {
                    ScimError::invalid_value(format!(
                        "{path}: '{t}' is not one of {}",
                        a.canonical.join(", ")
                    ))
                }),
            _ => Err(wrong("a string")),
        },
        Kind::Str | Kind::Reference => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            _ => Err(wrong("a string")),
        },
        Kind::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(t) if t.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(t) if t.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(wrong("a boolean")),
        },
        Kind::Complex => match v {
            Value::Object(m) => Ok(Value::Object(clean(a.sub, m, path)?)),
            // A manager (or a member) given as its bare id.
            Value::String(id) if find(a.sub, "value").is_some() => Ok(json!({ "value": id })),
            _ => Err(wrong("an object")),
        },
    }
}

/// A value shown in an error: short, so a large body is not echoed back.
pub fn short(v: &Value) -> String {
    let t = v.to_string();
    if t.chars().count() > 64 {
        format!("{}…", t.chars().take(64).collect::<String>())
    } else {
        t
    }
}
