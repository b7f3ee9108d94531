//! SAML sign-in: through nanoidp end to end, and against responses this
//! test signs itself (samael with xmlsec) to be refused: unsigned, signed by
//! another key, a signature-wrapping document, a replayed assertion, a wrong
//! audience, metadata without a certificate.

use chrono::{Duration, Utc};
use samael::attribute::{Attribute, AttributeValue};
use samael::crypto::{
    gen_saml_assertion_id, gen_saml_response_id, mime_encode_x509_cert, CertificateDer, Crypto,
    CryptoProvider,
};
use samael::idp::{CertificateParams, IdentityProvider, KeyType, Rsa};
use samael::schema::{
    Assertion, AttributeStatement, AudienceRestriction, Conditions, Issuer, Response, Status,
    StatusCode, Subject, SubjectConfirmation, SubjectConfirmationData, SubjectNameID,
};
use samael::signature::{DigestAlgorithm, Signature};
use samael::traits::ToXml;
use serde_json::Value;

use crate::helpers::{Backend, TestApp, OWNER_PASSWORD};
use crate::sso::NanoIdp;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn location(res: reqwest::Response) -> String {
    assert!(res.status().is_redirection(), "{}", res.status());
    res.headers()["location"].to_str().unwrap().to_owned()
}

fn query_value(url: &str, key: &str) -> String {
    let q = url.split_once('?').unwrap().1;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The value of a hidden form field in the IdP's auto-submitting page.
fn form_field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\""))
        .unwrap_or_else(|| panic!("{name} in {html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    let end = rest[v..].find('"').unwrap();
    rest[v..v + end]
        .replace("&#43;", "+")
        .replace("&#x2B;", "+")
        .replace("&#61;", "=")
        .replace("&amp;", "&")
}

async fn saml_connection(
    app: &TestApp,
    owner: &reqwest::Client,
    org: &str,
    domains: &str,
    source: (&str, &str),
) -> Value {
    let mut form = vec![
        ("org_id", org),
        ("connection_id", ""),
        ("name", "Corp SAML"),
        ("domains", domains),
        ("default_role", "viewer"),
        ("groups_claim", "groups"),
        ("mapping", "engineering => member"),
        ("enabled", "on"),
        ("metadata_url", ""),
        ("metadata_xml", ""),
    ];
    form.retain(|(k, _)| *k != source.0);
    form.push(source);
    app.ok(owner, "save_saml_connection", &form).await
}

async fn saml_signs_people_in_through_nanoidp(backend: Backend) {
    let idp = NanoIdp::start().await;
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
    let c = saml_connection(
        &app,
        &owner,
        &org,
        "corp.test",
        ("metadata_url", &format!("{}/saml/metadata", idp.url)),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["idp_entity_id"], format!("{}/saml", idp.url));
    assert_eq!(c["has_certificate"], true);
    // Our SP metadata, for the IdP's admin.
    let md = reqwest::get(format!("{}/sso/{id}/metadata", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(md.contains(&format!("{}/sso/{id}/acs", app.url)), "{md}");

    let b = browser();
    let to_idp = location(
        b.get(format!("{}/sso/{id}/start", app.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        to_idp.starts_with(&format!("{}/saml/sso?SAMLRequest=", idp.url)),
        "{to_idp}"
    );
    let page = reqwest::Client::new()
        .post(&to_idp)
        .form(&[("username", "carol"), ("password", "carol-pw")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (response, relay) = (
        form_field(&page, "SAMLResponse"),
        form_field(&page, "RelayState"),
    );
    // The ACS is a cross-site POST: no cookie comes with it.
    let acs = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let next = location(
        acs.post(format!("{}/sso/{id}/acs", app.url))
            .form(&[
                ("SAMLResponse", response.as_str()),
                ("RelayState", relay.as_str()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(next.starts_with(&format!("/sso/{id}/finish?")), "{next}");
    let landed = location(b.get(format!("{}{next}", app.url)).send().await.unwrap()).await;
    assert_eq!(landed, format!("/orgs/{org}"));
    let me: Value = b
        .post(format!("{}/api/console/current_user", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "carol@corp.test");
    let mut db = app.sql().await;
    let (role, via): (String, String) = sqlx::query_as(
        "SELECT m.role, m.joined_via FROM org_members m JOIN users u ON u.id = m.user_id WHERE u.email = 'carol@corp.test'",
    )
    .fetch_one(&mut db)
    .await
    .unwrap();
    assert_eq!((role.as_str(), via.as_str()), ("member", "saml"));
    // The same response posted again: refused, and no session for whoever posts it.
    let again = location(
        browser()
            .post(format!("{}/sso/{id}/acs", app.url))
            .form(&[
                ("SAMLResponse", response.as_str()),
                ("RelayState", relay.as_str()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(again.starts_with("/login?sso_error="), "{again}");
}
both!(saml_signs_people_in_through_nanoidp);

/// An IdP of this test's own, signing what the cases need.
struct TestIdp {
    entity_id: String,
    cert: CertificateDer,
    key_der: Vec<u8>,
}

impl TestIdp {
    fn new(entity_id: &str) -> TestIdp {
        let idp = IdentityProvider::generate_new(KeyType::Rsa(Rsa::Rsa2048)).unwrap();
        let cert = idp
            .create_certificate(&CertificateParams {
                common_name: "test-idp",
                issuer_name: "test-idp",
                days_until_expiration: 2,
            })
            .unwrap();
        TestIdp {
            entity_id: entity_id.into(),
            cert,
            key_der: idp.export_private_key_der().unwrap(),
        }
    }

    fn metadata(&self, with_cert: bool) -> String {
        let key = if with_cert {
            format!(
                r#"<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"#,
                mime_encode_x509_cert(&self.cert)
            )
        } else {
            String::new()
        };
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{eid}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{key}<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.test/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
            eid = self.entity_id
        )
    }

    fn template(&self, ref_id: &str) -> Signature {
        let mut sig = Signature::template(ref_id, &self.cert);
        sig.signed_info.reference[0].digest_method.algorithm = DigestAlgorithm::Sha256;
        sig
    }

    fn sign(&self, xml: &str) -> String {
        Crypto::sign_xml(xml, &self.key_der).unwrap()
    }
}

/// What an assertion says.
#[derive(Clone)]
struct Said {
    issuer: String,
    name_id: String,
    request: String,
    audience: String,
    acs: String,
    assertion_id: String,
}

fn assertion(s: &Said) -> Assertion {
    let now = Utc::now();
    let exp = now + Duration::seconds(300);
    Assertion {
        id: s.assertion_id.clone(),
        issue_instant: now,
        version: "2.0".into(),
        issuer: Issuer {
            value: Some(s.issuer.clone()),
            ..Default::default()
        },
        signature: None,
        subject: Some(Subject {
            name_id: Some(SubjectNameID {
                format: Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into()),
                value: s.name_id.clone(),
            }),
            subject_confirmations: Some(vec![SubjectConfirmation {
                method: Some("urn:oasis:names:tc:SAML:2.0:cm:bearer".into()),
                name_id: None,
                subject_confirmation_data: Some(SubjectConfirmationData {
                    not_before: None,
                    not_on_or_after: Some(exp),
                    recipient: Some(s.acs.clone()),
                    in_response_to: Some(s.request.clone()),
                    address: None,
                    content: None,
                }),
            }]),
        }),
        conditions: Some(Conditions {
            not_before: Some(now - Duration::seconds(5)),
            not_on_or_after: Some(exp),
            audience_restrictions: Some(vec![AudienceRestriction {
                audience: vec![s.audience.clone()],
            }]),
            one_time_use: None,
            proxy_restriction: None,
        }),
        authn_statements: None,
        attribute_statements: Some(vec![AttributeStatement {
            attributes: vec![Attribute {
                friendly_name: None,
                name: Some("groups".into()),
                name_format: None,
                values: vec![AttributeValue {
                    attribute_type: None,
                    value: Some("engineering".into()),
                }],
            }],
        }]),
    }
}

/// A Response around `a`, its assertion signed by `signer` (or unsigned).
fn response_xml(s: &Said, signer: Option<&TestIdp>) -> String {
    let mut a = assertion(s);
    if let Some(k) = signer {
        a.signature = Some(k.template(&a.id));
    }
    let r = Response {
        id: gen_saml_response_id(),
        in_response_to: Some(s.request.clone()),
        version: "2.0".into(),
        issue_instant: Utc::now(),
        destination: Some(s.acs.clone()),
        consent: None,
        issuer: Some(Issuer {
            value: Some(s.issuer.clone()),
            ..Default::default()
        }),
        signature: None,
        status: Some(Status {
            status_code: StatusCode {
                value: Some("urn:oasis:names:tc:SAML:2.0:status:Success".into()),
            },
            status_message: None,
            status_detail: None,
        }),
        encrypted_assertion: None,
        assertion: Some(a),
    };
    let xml = r.to_string().unwrap();
    match signer {
        Some(k) => k.sign(&xml),
        None => xml,
    }
}

fn b64(xml: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(xml)
}

/// Starts a sign-in with `b`; returns the request id (the RelayState).
async fn begin(app: &TestApp, b: &reqwest::Client, id: &str) -> String {
    let to_idp = location(
        b.get(format!("{}/sso/{id}/start", app.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    query_value(&to_idp, "RelayState")
}

/// Posts a response to the ACS, then (if it was taken) finishes with `b`;
/// returns where the browser ended and whether it has a session.
async fn answer(
    app: &TestApp,
    b: &reqwest::Client,
    id: &str,
    xml: &str,
    relay: &str,
) -> (String, bool) {
    let acs = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut to = location(
        acs.post(format!("{}/sso/{id}/acs", app.url))
            .form(&[("SAMLResponse", b64(xml).as_str()), ("RelayState", relay)])
            .send()
            .await
            .unwrap(),
    )
    .await;
    if to.starts_with("/sso/") {
        to = location(b.get(format!("{}{to}", app.url)).send().await.unwrap()).await;
    }
    let has = b
        .post(format!("{}/api/console/current_user", app.url))
        .send()
        .await
        .unwrap()
        .status()
        .is_success();
    (to, has)
}

fn reason(to: &str) -> String {
    query_value(to, "sso_error")
}

#[test]
fn saml_refuses_unsigned_foreign_wrapped_replayed_and_misdirected_responses() {
    crate::helpers::run(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let (owner, org) = app.setup("owner@a.test", OWNER_PASSWORD).await;
        let idp = TestIdp::new("https://idp.example.test/metadata");
        // Metadata without a signing certificate is refused when saved.
        let mut form = vec![
            ("org_id", org.as_str()),
            ("connection_id", ""),
            ("name", "Corp SAML"),
            ("domains", "saml.test"),
            ("default_role", "viewer"),
            ("groups_claim", "groups"),
            ("mapping", "engineering => member"),
            ("enabled", "on"),
            ("metadata_url", ""),
        ];
        let unsigned_md = idp.metadata(false);
        form.push(("metadata_xml", &unsigned_md));
        let (s, e) = app.call(&owner, "save_saml_connection", &form).await;
        assert_eq!((s, e["field"].as_str()), (400, Some("metadata_xml")), "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("certificate"),
            "{e}"
        );
        let c = saml_connection(
            &app,
            &owner,
            &org,
            "saml.test",
            ("metadata_xml", &idp.metadata(true)),
        )
        .await;
        let id = c["id"].as_str().unwrap().to_owned();
        let said = |request: &str| Said {
            issuer: idp.entity_id.clone(),
            name_id: "erin@saml.test".into(),
            request: request.into(),
            audience: format!("{}/sso/{id}/metadata", app.url),
            acs: format!("{}/sso/{id}/acs", app.url),
            assertion_id: gen_saml_assertion_id(),
        };

        // The control: well signed, accepted, and the assertion's id is kept.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let good = said(&req);
        let (to, has) = answer(&app, &b, &id, &response_xml(&good, Some(&idp)), &req).await;
        assert_eq!((to.as_str(), has), (format!("/orgs/{org}").as_str(), true));

        let refused = |case: &str, to: &str, has: bool| {
            assert!(to.starts_with("/login?sso_error="), "{case}: {to}");
            assert!(!has, "{case}: no session");
            eprintln!("SAML {case}: refused: {}", reason(to));
        };
        // Unsigned.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let (to, has) = answer(&app, &b, &id, &response_xml(&said(&req), None), &req).await;
        refused("unsigned response", &to, has);
        assert!(reason(&to).contains("must be signed"), "{to}");
        // Signed by another key.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let mallory = TestIdp::new(&idp.entity_id);
        let (to, has) = answer(
            &app,
            &b,
            &id,
            &response_xml(&said(&req), Some(&mallory)),
            &req,
        )
        .await;
        refused("signed by another key", &to, has);
        // Signature wrapping: an unsigned evil assertion next to the signed one.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let signed = response_xml(&said(&req), Some(&idp));
        let mut evil = said(&req);
        evil.name_id = "owner@a.test".into();
        let evil_xml = assertion(&evil).to_string().unwrap();
        let evil_xml = evil_xml.trim_start_matches(|c| c != '<').to_owned();
        let evil_xml = evil_xml
            .strip_prefix("<?xml")
            .map_or(evil_xml.clone(), |r| {
                r[r.find("?>").unwrap() + 2..].to_owned()
            });
        let at = signed.find("<saml2:Assertion").unwrap();
        let wrapped = format!("{}{}{}", &signed[..at], evil_xml, &signed[at..]);
        let (to, has) = answer(&app, &b, &id, &wrapped, &req).await;
        refused("signature wrapping", &to, has);
        // A replayed assertion: the used id again, for a new request.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let mut replay = said(&req);
        replay.assertion_id = good.assertion_id.clone();
        let (to, has) = answer(&app, &b, &id, &response_xml(&replay, Some(&idp)), &req).await;
        refused("replayed assertion", &to, has);
        assert!(reason(&to).contains("replay"), "{to}");
        // For another service.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let mut elsewhere = said(&req);
        elsewhere.audience = "https://other.example.test/sp".into();
        let (to, has) = answer(&app, &b, &id, &response_xml(&elsewhere, Some(&idp)), &req).await;
        refused("wrong audience", &to, has);
        // An answer to a request this browser did not make.
        let b = browser();
        let req = begin(&app, &b, &id).await;
        let (to, has) = answer(
            &app,
            &browser(),
            &id,
            &response_xml(&said(&req), Some(&idp)),
            &req,
        )
        .await;
        refused("another browser's request", &to, has);
        // IdP-initiated (no RelayState): off by default.
        let (to, has) = answer(
            &app,
            &browser(),
            &id,
            &response_xml(&said("_none"), Some(&idp)),
            "",
        )
        .await;
        refused("IdP-initiated", &to, has);
    });
}
