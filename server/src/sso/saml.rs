//! SAML 2.0 sign-in through `samael` built with `xmlsec` (signature checks;
//! it is never built without). The IdP's metadata must carry a signing
//! certificate: without one samael would skip the signature check, so such
//! metadata is refused when the connection is saved and again here.
//!
//! The AuthnRequest's id is stored (single use, ten minutes) and sent as
//! RelayState. The ACS is a cross-site POST that carries no session cookie:
//! it checks the response (signature over the used content only, InResponseTo,
//! Audience, Recipient, Destination, NotBefore/NotOnOrAfter with a minute of
//! skew, the issuer), records the assertion id (a replay is refused), keeps
//! the result by request id and redirects; the same-site GET that follows
//! carries the session, which must be the one that started this request.

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Duration;
use samael::crypto::{decode_x509_cert, AllowedSignatureAlgorithm};
use samael::metadata::{EntityDescriptor, HTTP_POST_BINDING, HTTP_REDIRECT_BINDING};
use samael::schema::Assertion;
use samael::service_provider::{ServiceProvider, ServiceProviderBuilder};
use samael::traits::ToXml;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tollgate_app::core::identity::{Connection, Kind};
use tollgate_app::core::now_ms;
use tollgate_app::core::ops::sso::Asserted;
use tower_sessions::Session;

use super::{refused, Sso};

/// How long an AuthnRequest waits for its answer.
const REQUEST_FOR_MS: i64 = 10 * 60 * 1000;
/// Where the session keeps the SAML request it started.
const PENDING_KEY: &str = "saml_pending";

pub use tollgate_app::core::state::IdpMetadata;

/// Reads IdP metadata: its entity id, its SSO URL (HTTP-Redirect preferred)
/// and its signing certificates; refused without a certificate.
pub fn parse_metadata(xml: &str) -> Result<IdpMetadata, String> {
    let ed: EntityDescriptor = xml
        .parse()
        .map_err(|e| format!("not SAML metadata (an EntityDescriptor): {e}"))?;
    let entity_id = ed.entity_id.clone().ok_or("the metadata has no entityID")?;
    let mut redirect = None;
    let (mut signing, mut unspecified) = (Vec::new(), Vec::new());
    for idp in ed.idp_sso_descriptors.iter().flatten() {
        for sso in &idp.single_sign_on_services {
            if sso.binding == HTTP_REDIRECT_BINDING && redirect.is_none() {
                redirect = Some(sso.location.clone());
            }
        }
        for kd in &idp.key_descriptors {
            for b64 in kd
                .key_info
                .x509_data
                .iter()
                .flat_map(|d| d.certificates.iter())
            {
                decode_x509_cert(b64)
                    .map_err(|e| format!("a certificate in the metadata is not valid: {e}"))?;
                let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
                match kd.key_use.as_deref() {
                    Some("signing") => signing.push(clean),
                    None | Some("") => unspecified.push(clean),
                    _ => {}
                }
            }
        }
    }
    if signing.is_empty() {
        signing = unspecified;
    }
    if signing.is_empty() {
        return Err(
            "the metadata has no signing certificate; Tollgate accepts only signed assertions"
                .into(),
        );
    }
    let sso_url =
        redirect.ok_or("the metadata has no SingleSignOnService with the HTTP-Redirect binding")?;
    Ok(IdpMetadata {
        entity_id,
        sso_url,
        certs: signing,
    })
}

fn sp_entity_id(sso: &Sso, c: &Connection) -> String {
    format!("{}/sso/{}/metadata", sso.app.public_url, c.id)
}

fn acs_url(sso: &Sso, c: &Connection) -> String {
    format!("{}/sso/{}/acs", sso.app.public_url, c.id)
}

/// Our service provider for a connection, from its stored metadata.
fn service_provider(sso: &Sso, c: &Connection, xml: &str) -> Result<ServiceProvider, String> {
    // Refused again here: samael checks no signature for metadata without a certificate.
    parse_metadata(xml)?;
    let ed: EntityDescriptor = xml.parse().map_err(|e| format!("stored metadata: {e}"))?;
    ServiceProviderBuilder::default()
        .entity_id(sp_entity_id(sso, c))
        .metadata_url(sp_entity_id(sso, c))
        .acs_url(acs_url(sso, c))
        .slo_url(None::<String>)
        .idp_metadata(ed)
        .allowed_signature_algorithms(vec![
            AllowedSignatureAlgorithm::RsaSha256,
            AllowedSignatureAlgorithm::RsaSha512,
            AllowedSignatureAlgorithm::EcdsaSha256,
        ])
        .max_issue_delay(Duration::seconds(120))
        .max_clock_skew(Duration::seconds(60))
        .allow_idp_initiated(c.allow_idp_initiated)
        .build()
        .map_err(|e| format!("the connection's SAML settings are incomplete: {e}"))
}

async fn stored_metadata(sso: &Sso, c: &Connection) -> Result<String, String> {
    let mut conn = sso
        .app
        .db
        .pool
        .acquire()
        .await
        .map_err(|_| "the database is unavailable; try again".to_owned())?;
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT metadata_xml FROM sso_connections WHERE id = $1",
    )
    .bind(&c.id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|_| "the database is unavailable; try again".to_owned())?
    .flatten()
    .ok_or_else(|| "the connection has no IdP metadata".to_owned())
}

/// `GET /sso/{connection}/metadata`: our SP metadata for the IdP's admin.
pub async fn metadata(State(sso): State<Sso>, Path(id): Path<String>) -> Response {
    use samael::metadata::{IndexedEndpoint, SpSsoDescriptor};
    let c = match sso.connection(&id).await {
        Ok(c) if c.kind == Kind::Saml => c,
        _ => return (StatusCode::NOT_FOUND, "no SAML connection here").into_response(),
    };
    let ed = EntityDescriptor {
        entity_id: Some(sp_entity_id(&sso, &c)),
        sp_sso_descriptors: Some(vec![SpSsoDescriptor {
            protocol_support_enumeration: Some("urn:oasis:names:tc:SAML:2.0:protocol".into()),
            authn_requests_signed: Some(false),
            want_assertions_signed: Some(true),
            name_id_formats: Some(vec![
                "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into(),
            ]),
            assertion_consumer_services: vec![IndexedEndpoint {
                binding: HTTP_POST_BINDING.to_string(),
                location: acs_url(&sso, &c),
                index: 0,
                is_default: Some(true),
                response_location: None,
            }],
            ..SpSsoDescriptor::default()
        }]),
        ..EntityDescriptor::default()
    };
    match ed.to_string() {
        Ok(xml) => (
            [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metadata could not be written",
        )
            .into_response(),
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    connection_id: String,
    request_id: String,
    test: bool,
}

/// Sends the browser to the IdP with a new AuthnRequest.
pub async fn start(sso: &Sso, session: &Session, c: &Connection, test: bool) -> Response {
    let xml = match stored_metadata(sso, c).await {
        Ok(x) => x,
        Err(e) => return refused(&e),
    };
    let Some(sso_url) = c.idp_sso_url.clone() else {
        return refused("the connection has no IdP sign-in URL");
    };
    let request_id = format!("_{}", tollgate_app::core::new_id());
    let url = {
        let sp = match service_provider(sso, c, &xml) {
            Ok(sp) => sp,
            Err(e) => return refused(&e),
        };
        let made = sp
            .make_authentication_request(&sso_url)
            .map_err(|e| e.to_string())
            .and_then(|mut req| {
                req.id = request_id.clone();
                req.redirect(&request_id).map_err(|e| e.to_string())
            });
        match made {
            Ok(Some(url)) => url.to_string(),
            Ok(None) => return refused("the IdP sign-in URL is missing"),
            Err(e) => return refused(&format!("the sign-in request could not be made: {e}")),
        }
    };
    let now = now_ms();
    let stored = match sso.app.db.pool.acquire().await {
        Ok(mut conn) => {
            // Requests nobody answered are forgotten once expired.
            let _ = sqlx::query("DELETE FROM saml_requests WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *conn)
                .await;
            sqlx::query(
            "INSERT INTO saml_requests (id, connection_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&request_id)
        .bind(&c.id)
        .bind(now)
        .bind(now.saturating_add(REQUEST_FOR_MS))
        .execute(&mut *conn)
        .await
        .is_ok()
        }
        Err(_) => false,
    };
    let pending = Pending {
        connection_id: c.id.clone(),
        request_id,
        test,
    };
    if !stored || session.insert(PENDING_KEY, &pending).await.is_err() {
        return refused("the sign-in could not be recorded; try again");
    }
    Redirect::to(&url).into_response()
}

#[derive(Deserialize)]
pub struct AcsForm {
    #[serde(rename = "SAMLResponse")]
    saml_response: String,
    #[serde(rename = "RelayState")]
    relay_state: Option<String>,
}

/// What a checked assertion said, kept until the browser comes back.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Verified {
    issuer: String,
    name_id: String,
    email: Option<String>,
    name: Option<String>,
    groups: Option<Vec<String>>,
}

/// Checks a response with samael (synchronously: its errors are not `Send`).
fn verify(
    sp: &ServiceProvider,
    b64: &str,
    request_id: &str,
    c: &Connection,
) -> Result<(String, i64, Verified), String> {
    let b64: String = b64.chars().filter(|ch| !ch.is_ascii_whitespace()).collect();
    // samael keeps only the signed assertion of a wrapped document; such a
    // document is refused outright instead.
    {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|_| "the SAML response is not base64".to_owned())?;
        let xml = String::from_utf8_lossy(&raw);
        if assertions_in(&xml) != 1 {
            return Err(
                "the SAML response was refused: it must carry exactly one assertion (signature wrapping?)".into(),
            );
        }
    }
    let assertion: Assertion = sp
        .parse_base64_response(&b64, Some(&[request_id]))
        .map_err(|e| format!("the SAML response was refused: {e}"))?;
    let entity = sp.entity_id.as_deref().unwrap_or_default();
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or("the SAML response was refused: the assertion has no Conditions")?;
    let ours = conditions
        .audience_restrictions
        .iter()
        .flatten()
        .any(|r| r.audience.iter().any(|a| a == entity));
    if !ours {
        return Err(
            "the SAML response was refused: the assertion is not for this service (Audience)"
                .into(),
        );
    }
    let name_id = assertion
        .subject
        .as_ref()
        .and_then(|s| s.name_id.as_ref())
        .map(|n| n.value.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or("the SAML response was refused: the assertion names no one (NameID)")?;
    let mut email = None;
    let mut name = None;
    let mut groups: Option<Vec<String>> = None;
    for st in assertion.attribute_statements.iter().flatten() {
        for attr in &st.attributes {
            let key = attr
                .name
                .clone()
                .or(attr.friendly_name.clone())
                .unwrap_or_default();
            let values: Vec<String> = attr.values.iter().filter_map(|v| v.value.clone()).collect();
            let k = key.to_ascii_lowercase();
            if key.eq_ignore_ascii_case(&c.groups_claim) {
                groups.get_or_insert_with(Vec::new).extend(values);
            } else if matches!(k.as_str(), "email" | "mail" | "emailaddress")
                || k.ends_with("/emailaddress")
            {
                email = values.into_iter().next();
            } else if matches!(k.as_str(), "name" | "displayname") || k.ends_with("/name") {
                name = values.into_iter().next();
            }
        }
    }
    let keep_until = conditions
        .not_on_or_after
        .map_or(now_ms().saturating_add(REQUEST_FOR_MS), |t| {
            t.timestamp_millis()
        })
        .saturating_add(5 * 60 * 1000);
    Ok((
        assertion.id.clone(),
        keep_until,
        Verified {
            issuer: assertion.issuer.value.clone().unwrap_or_default(),
            name_id,
            email,
            name,
            groups,
        },
    ))
}

/// How many `Assertion` elements (any prefix) a document opens.
fn assertions_in(xml: &str) -> usize {
    xml.match_indices("Assertion")
        .filter(|(i, _)| {
            let Some(open) = xml[..*i].rfind('<') else {
                return false;
            };
            let name = &xml[open + 1..*i];
            let prefix_ok = name.is_empty()
                || name.strip_suffix(':').is_some_and(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                });
            let after = xml[*i + "Assertion".len()..].chars().next();
            prefix_ok && after.is_some_and(|c| c.is_whitespace() || c == '>' || c == '/')
        })
        .count()
}

/// `POST /sso/{connection}/acs`: the IdP's answer.
pub async fn acs(
    State(sso): State<Sso>,
    Path(id): Path<String>,
    Form(f): Form<AcsForm>,
) -> Response {
    let c = match sso.connection(&id).await {
        Ok(c) if c.kind == Kind::Saml => c,
        Ok(_) => return refused("this connection is not a SAML connection"),
        Err(e) => return refused(&e),
    };
    let Some(request_id) = f.relay_state.filter(|r| !r.is_empty() && r.len() <= 100) else {
        return refused(if c.allow_idp_initiated {
            "IdP-initiated sign-in needs the browser to start at Tollgate; use the sign-in page"
        } else {
            "IdP-initiated sign-in is off for this connection; start from Tollgate's sign-in page"
        });
    };
    let now = now_ms();
    let mut conn = match sso.app.db.pool.acquire().await {
        Ok(c) => c,
        Err(_) => return refused("the database is unavailable; try again"),
    };
    let known = sqlx::query(
        "SELECT connection_id, expires_at FROM saml_requests WHERE id = $1 AND result_json IS NULL",
    )
    .bind(&request_id)
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten();
    let live = known.is_some_and(|r| {
        r.try_get::<String, _>("connection_id")
            .is_ok_and(|x| x == c.id)
            && r.try_get::<i64, _>("expires_at").is_ok_and(|e| e > now)
    });
    if !live {
        return refused(
            "this SAML response answers no sign-in in progress (unknown, expired or already used)",
        );
    }
    let xml = match stored_metadata(&sso, &c).await {
        Ok(x) => x,
        Err(e) => return refused(&e),
    };
    let (sso2, c2, rid) = (sso.clone(), c.clone(), request_id.clone());
    let checked = tokio::task::spawn_blocking(move || {
        let sp = service_provider(&sso2, &c2, &xml)?;
        verify(&sp, &f.saml_response, &rid, &c2)
    })
    .await
    .map_err(|_| "the SAML response could not be checked".to_owned())
    .and_then(|r| r);
    let (assertion_id, keep_until, verified) = match checked {
        Ok(v) => v,
        Err(e) => return refused(&e),
    };
    // Replay cache: each assertion is used once.
    let fresh = sqlx::query(
        "INSERT INTO saml_assertions (id, connection_id, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(&assertion_id)
    .bind(&c.id)
    .bind(keep_until)
    .execute(&mut *conn)
    .await
    .is_ok();
    let _ = sqlx::query("DELETE FROM saml_assertions WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *conn)
        .await;
    if !fresh {
        return refused("this SAML assertion was already used (replay)");
    }
    let result = serde_json::to_string(&verified).unwrap_or_default();
    let kept = sqlx::query(
        "UPDATE saml_requests SET result_json = $1 WHERE id = $2 AND result_json IS NULL",
    )
    .bind(&result)
    .bind(&request_id)
    .execute(&mut *conn)
    .await
    .map(|d| d.rows_affected() == 1)
    .unwrap_or(false);
    if !kept {
        return refused("this sign-in was already answered");
    }
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request", &request_id)
        .finish();
    Redirect::to(&format!("/sso/{}/finish?{q}", c.id)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn assertions_are_counted_by_their_opening_tags() {
        let one = r#"<saml2p:Response AssertionConsumerServiceURL="x"><saml2:Assertion ID="a"><x/></saml2:Assertion></saml2p:Response>"#;
        assert_eq!(super::assertions_in(one), 1);
        let two = r#"<Response><Assertion ID="b"/><saml:Assertion ID="a">x</saml:Assertion><EncryptedAssertion/></Response>"#;
        assert_eq!(super::assertions_in(two), 2);
    }
}

#[derive(Debug, Deserialize)]
pub struct FinishQuery {
    request: String,
}

/// `GET /sso/{connection}/finish`: the browser that started the request
/// (its session) takes the checked result, once.
pub async fn finish(
    State(sso): State<Sso>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<FinishQuery>,
) -> Response {
    let pending: Option<Pending> = session.remove(PENDING_KEY).await.ok().flatten();
    let Some(p) = pending.filter(|p| p.connection_id == id && p.request_id == q.request) else {
        // The result is dropped too: a response posted from another browser is useless.
        if let Ok(mut conn) = sso.app.db.pool.acquire().await {
            let _ = sqlx::query("DELETE FROM saml_requests WHERE id = $1")
                .bind(&q.request)
                .execute(&mut *conn)
                .await;
        }
        return refused("this sign-in was not started in this browser; start again");
    };
    let c = match sso.connection(&id).await {
        Ok(c) => c,
        Err(e) => return refused(&e),
    };
    let Ok(mut conn) = sso.app.db.pool.acquire().await else {
        return refused("the database is unavailable; try again");
    };
    let row: Option<Option<String>> = sqlx::query_scalar(
        "DELETE FROM saml_requests WHERE id = $1 AND connection_id = $2 RETURNING result_json",
    )
    .bind(&p.request_id)
    .bind(&c.id)
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten();
    drop(conn);
    let Some(v) = row
        .flatten()
        .and_then(|r| serde_json::from_str::<Verified>(&r).ok())
    else {
        return refused("this sign-in has no checked answer; start again");
    };
    let email = v
        .email
        .clone()
        .or_else(|| v.name_id.contains('@').then(|| v.name_id.clone()))
        .unwrap_or_default();
    let asserted = Asserted {
        issuer: v.issuer,
        subject: v.name_id,
        email,
        // SAML has no "verified" flag: an existing account is not linked.
        email_verified: false,
        name: v.name,
        groups: v.groups,
    };
    super::finish(&sso, &session, &c, asserted, p.test).await
}
