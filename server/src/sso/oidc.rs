//! OIDC sign-in (authorization code flow with PKCE S256, state and nonce)
//! through `openidconnect`: discovery, the authorization URL, the code
//! exchange, ID-token verification (issuer, audience, expiry, nonce,
//! signature; the keys fetched again when a key id is unknown), userinfo,
//! and error messages that never carry a token or a secret.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    HttpClientError, IdTokenClaims, IdTokenFields, IssuerUrl, JsonWebKeySet, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardErrorResponse, StandardTokenResponse, SubjectIdentifier, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};

/// openidconnect 4 / oauth2 5 take the HTTP client *by reference*: oauth2 implements
/// `AsyncHttpClient<'c>` for `reqwest::Client` (feature "reqwest"), so you pass `&http`
/// to every `*_async` call. Its error type is `HttpClientError<reqwest::Error>`.
///
/// Keep this a separate client from the gateway's upstream client: no redirects
/// (SSRF guard, recommended by the crate docs), no cookie store (reqwest only keeps
/// cookies if `.cookie_store(true)` is set, so simply don't), short timeouts.
pub fn build_http_client(allow_private: bool) -> Result<reqwest::Client, String> {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("tollgate-oidc/", env!("CARGO_PKG_VERSION")));
    // Private addresses refused after DNS resolution (unless the operator
    // allows them), and no redirect followed at all.
    crate::net_guard::guard(builder, allow_private)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("could not build the OIDC HTTP client: {e}"))
}

/// The error type of `&reqwest::Client` as an openidconnect async HTTP client.
pub type HttpErr = HttpClientError<reqwest::Error>;

// ---------------------------------------------------------------------------
// 4. Custom additional claims (groups etc.) and the client type aliases
// ---------------------------------------------------------------------------

/// Every claim that is not a standard OIDC claim, kept as raw JSON.
/// openidconnect wraps `AC` in a filter that drops the standard claims (sub, email,
/// name, ...) and the JWT fields it parses itself (iss, aud, exp, iat, nonce, ...),
/// so this map holds only the extra ones: `groups`, `roles`, `realm_access`, ...
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for ExtraClaims {}

/// The ID-token claim type is tied to the *token response* type of the client, so a
/// custom `AC` needs its own token response type and client alias (CoreClient is
/// hard-wired to `EmptyAdditionalClaims`, which silently drops `groups`).
pub type TgIdTokenFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub type TgTokenResponse = StandardTokenResponse<TgIdTokenFields, CoreTokenType>;
pub type TgIdTokenClaims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;
pub type TgUserInfoClaims = UserInfoClaims<ExtraClaims, CoreGenderClaim>;

/// Same shape as `openidconnect::core::CoreClient`, but with `ExtraClaims`.
/// The defaults of the six endpoint typestate parameters are what
/// `from_provider_metadata` returns: auth URL *set*, token & userinfo *maybe set*
/// (so `exchange_code` and `user_info` return `Result<_, ConfigurationError>`),
/// device/introspection/revocation *not set*.
pub type TgClient<
    HasAuthUrl = EndpointSet,
    HasDeviceAuthUrl = EndpointNotSet,
    HasIntrospectionUrl = EndpointNotSet,
    HasRevocationUrl = EndpointNotSet,
    HasTokenUrl = EndpointMaybeSet,
    HasUserInfoUrl = EndpointMaybeSet,
> = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TgTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    HasAuthUrl,
    HasDeviceAuthUrl,
    HasIntrospectionUrl,
    HasRevocationUrl,
    HasTokenUrl,
    HasUserInfoUrl,
>;

#[derive(Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_url: String,
    /// Beyond "openid" (always sent): e.g. ["email", "profile", "groups"].
    /// Must be configurable: some IdPs reject scopes they don't know
    /// (nanoidp answers `invalid_scope` for "groups" unless configured).
    pub scopes: Vec<String>,
    /// Dotted JSON path to the groups claim, e.g. "groups" or "realm_access.roles".
    pub groups_claim: String,
}

struct Discovered {
    metadata: CoreProviderMetadata,
    client: Arc<TgClient>,
    jwks_fetched_at: Instant,
}

/// What the gateway keeps in its state. The client is rebuilt from the metadata
/// whenever the JWKS changes (`Client` has no `set_jwks`; `ProviderMetadata` does).
pub struct OidcProvider {
    http: reqwest::Client,
    cfg: OidcConfig,
    redirect_url: RedirectUrl,
    inner: RwLock<Discovered>,
}

/// Minimum gap between two JWKS refetches triggered by an unknown `kid`,
/// so a flood of forged tokens can't turn us into a JWKS hammer.
const JWKS_REFRESH_MIN_INTERVAL: Duration = Duration::from_secs(30);

fn build_client(
    metadata: CoreProviderMetadata,
    cfg: &OidcConfig,
    redirect_url: &RedirectUrl,
) -> TgClient {
    // `from_provider_metadata` is generic over the client's type parameters, so the
    // same call builds a TgClient (ExtraClaims) or a CoreClient, chosen by the
    // annotated return type.
    TgClient::from_provider_metadata(
        metadata,
        ClientId::new(cfg.client_id.clone()),
        cfg.client_secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(redirect_url.clone())
    // default AuthType is BasicAuth (client_secret_basic); use
    // .set_auth_type(openidconnect::AuthType::RequestBody) for client_secret_post.
}

impl OidcProvider {
    pub async fn discover(http: reqwest::Client, cfg: OidcConfig) -> Result<Self, String> {
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| format!("oidc.issuer is not a valid URL: {e}"))?;
        let redirect_url = RedirectUrl::new(cfg.redirect_url.clone())
            .map_err(|e| format!("oidc.redirect_url is not a valid URL: {e}"))?;
        // GET {issuer}/.well-known/openid-configuration, checks that the document's
        // `issuer` equals ours *exactly* (trailing slash matters), then GETs jwks_uri.
        let metadata = CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| format!("OIDC discovery failed: {}", discovery_error(&e)))?;
        if metadata.token_endpoint().is_none() {
            return Err("OIDC discovery failed: the provider has no token_endpoint".into());
        }
        let client = Arc::new(build_client(metadata.clone(), &cfg, &redirect_url));
        Ok(Self {
            http,
            cfg,
            redirect_url,
            inner: RwLock::new(Discovered {
                metadata,
                client,
                jwks_fetched_at: Instant::now(),
            }),
        })
    }

    pub fn client(&self) -> Arc<TgClient> {
        match self.inner.read() {
            Ok(g) => g.client.clone(),
            Err(poisoned) => poisoned.into_inner().client.clone(),
        }
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn groups_claim(&self) -> &str {
        &self.cfg.groups_claim
    }

    // -----------------------------------------------------------------------
    // 6. Key rotation: refetch the JWKS (rate limited), swap in a rebuilt client.
    // -----------------------------------------------------------------------

    /// Returns Ok(true) if new keys were installed, Ok(false) if skipped (too soon).
    pub async fn refresh_jwks(&self) -> Result<bool, String> {
        let (jwks_uri, last) = {
            let g = self
                .inner
                .read()
                .map_err(|_| "OIDC state lock poisoned".to_string())?;
            (g.metadata.jwks_uri().clone(), g.jwks_fetched_at)
        };
        if last.elapsed() < JWKS_REFRESH_MIN_INTERVAL {
            return Ok(false);
        }
        let jwks: CoreJsonWebKeySet = JsonWebKeySet::fetch_async(&jwks_uri, &self.http)
            .await
            .map_err(|e| {
                format!(
                    "fetching the provider's signing keys failed: {}",
                    discovery_error(&e)
                )
            })?;
        let mut g = self
            .inner
            .write()
            .map_err(|_| "OIDC state lock poisoned".to_string())?;
        let metadata = g.metadata.clone().set_jwks(jwks);
        g.client = Arc::new(build_client(
            metadata.clone(),
            &self.cfg,
            &self.redirect_url,
        ));
        g.metadata = metadata;
        g.jwks_fetched_at = Instant::now();
        Ok(true)
    }

    // -----------------------------------------------------------------------
    // 3. Authorization URL: PKCE S256 + state + nonce + scopes
    // -----------------------------------------------------------------------

    pub fn start_login(&self) -> PendingLogin {
        let client = self.client();
        let (pkce_challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf_state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            // "openid" is added by the client itself (enable_openid_scope is the default).
            .add_scopes(self.cfg.scopes.iter().cloned().map(Scope::new))
            .set_pkce_challenge(pkce_challenge)
            .url();
        PendingLogin {
            authorize_url: url.to_string(),
            // These three go into a short-lived, signed/encrypted HttpOnly cookie or a
            // server-side table keyed by `state`; all three are plain Strings.
            state: csrf_state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: pkce_verifier.secret().clone(),
        }
    }

    // -----------------------------------------------------------------------
    // 4. Callback: code exchange + ID token verification (+ at_hash)
    // -----------------------------------------------------------------------

    /// `returned_state` is the `state` query parameter, `saved` what start_login stored.
    pub async fn finish_login(
        &self,
        saved: &PendingLogin,
        returned_state: &str,
        code: &str,
    ) -> Result<LoginResult, String> {
        // CSRF: CsrfToken has no PartialEq (timing); compare in constant time.
        if !constant_time_eq(saved.state.as_bytes(), returned_state.as_bytes()) {
            return Err("sign-in failed: state mismatch (stale or forged callback)".into());
        }
        let client = self.client();
        let token_response: TgTokenResponse = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| format!("sign-in failed: {e}"))? // ConfigurationError: no token endpoint
            .set_pkce_verifier(PkceCodeVerifier::new(saved.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| format!("sign-in failed at the token endpoint: {}", token_error(&e)))?;

        let nonce = Nonce::new(saved.nonce.clone());
        let claims = self.verify_id_token(&token_response, &nonce).await?;
        Ok(LoginResult {
            claims,
            access_token: token_response.access_token().clone(),
        })
    }

    /// Verifies signature (JWKS, alg in id_token_signing_alg_values_supported),
    /// iss == discovered issuer, aud contains client_id (and no other untrusted aud),
    /// exp > now, nonce == ours; then at_hash if present. One retry after a JWKS
    /// refresh when the token's `kid` is not in the cached key set.
    pub async fn verify_id_token(
        &self,
        token_response: &TgTokenResponse,
        nonce: &Nonce,
    ) -> Result<TgIdTokenClaims, String> {
        use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};

        let id_token = token_response.id_token().ok_or(
            "sign-in failed: the provider returned no ID token (is the `openid` scope allowed?)",
        )?;

        for attempt in 0..2 {
            {
                let client = self.client();
                let verifier = client.id_token_verifier();
                match id_token.claims(&verifier, nonce) {
                    Ok(claims) => {
                        // at_hash: optional in the code flow, but if present it must match.
                        if let Some(expected) = claims.access_token_hash() {
                            let alg = id_token
                                .signing_alg()
                                .map_err(|e| format!("sign-in failed: {}", signature_error(&e)))?;
                            let key = id_token
                                .signing_key(&verifier)
                                .map_err(|e| format!("sign-in failed: {}", signature_error(&e)))?;
                            let actual = AccessTokenHash::from_token(
                                token_response.access_token(),
                                alg,
                                key,
                            )
                            .map_err(|e| format!("sign-in failed: cannot compute at_hash: {e}"))?;
                            if actual != *expected {
                                return Err("sign-in failed: ID token at_hash does not match the access token".into());
                            }
                        }
                        return Ok(claims.clone());
                    }
                    // Unknown kid (or no key of the right type): the IdP probably
                    // rotated its keys. Refetch once (rate limited) and verify again.
                    Err(C::SignatureVerification(S::NoMatchingKey)) if attempt == 0 => {}
                    Err(e) => return Err(format!("sign-in failed: {}", claims_error(&e))),
                }
            } // verifier/client borrow ends before the await
              // Ok(false) = skipped by the rate limit; retry anyway, since a concurrent
              // request may just have installed the new keys.
            self.refresh_jwks().await?;
        }
        Err(format!(
            "sign-in failed: {}",
            signature_error(&S::NoMatchingKey)
        ))
    }

    // -----------------------------------------------------------------------
    // 5. Userinfo
    // -----------------------------------------------------------------------

    /// `AC` is chosen per call (it's a type parameter of `request_async`, not of the
    /// client), so the core client could also fetch `UserInfoClaims<ExtraClaims, _>`.
    /// Passing `Some(subject)` makes the library reject a userinfo response whose
    /// `sub` differs from the ID token's (token substitution).
    pub async fn userinfo(
        &self,
        access_token: AccessToken,
        subject: SubjectIdentifier,
    ) -> Result<TgUserInfoClaims, String> {
        let client = self.client();
        let req = client
            .user_info(access_token, Some(subject))
            .map_err(|e| format!("userinfo unavailable: {e}"))?; // ConfigurationError::MissingUrl
        req.request_async(&self.http)
            .await
            .map_err(|e| format!("userinfo request failed: {}", userinfo_error(&e)))
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PendingLogin {
    pub authorize_url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

pub struct LoginResult {
    pub claims: TgIdTokenClaims,
    pub access_token: AccessToken,
}

/// Serialize the whole verified claim set (standard + extra) to JSON and walk it.
/// Works for both `TgIdTokenClaims` and `TgUserInfoClaims`.
pub fn claims_json<T: Serialize>(claims: &T) -> serde_json::Value {
    serde_json::to_value(claims).unwrap_or(serde_json::Value::Null)
}

/// "groups" -> v["groups"], "realm_access.roles" -> v["realm_access"]["roles"].
/// A key that itself contains dots (e.g. "https://example.com/groups", common with
/// Auth0 namespaced claims) is tried whole first.
pub fn lookup_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if let Some(found) = v.get(path) {
        return Some(found);
    }
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            serde_json::Value::Object(m) => m.get(seg)?,
            serde_json::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Accepts an array of strings, a single string, or a space/comma separated string.
pub fn string_list(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|i| match i {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Some(serde_json::Value::String(s)) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

pub fn groups_from_claims<T: Serialize>(claims: &T, path: &str) -> Vec<String> {
    string_list(lookup_path(&claims_json(claims), path))
}

// ---------------------------------------------------------------------------
// 7. Errors -> clear messages, no secrets
// ---------------------------------------------------------------------------
//
// What can carry secrets:
// * RequestTokenError::Parse(_, body): the raw token-endpoint body -- on a *200*
//   that failed to parse this contains access/refresh/id tokens. Never print the body.
// * serde errors: serde_json's Display can quote the offending value
//   (`invalid type: string "eyJ..."`), so print only the path and the category.
// * DiscoveryError/UserInfoError::Response(_, body, _): IdP HTML/JSON; not secret,
//   but can be huge and is attacker-influenced: don't echo it.
// * reqwest::Error Display includes the URL; our URLs carry no secrets (the code
//   and client secret travel in the POST body / Authorization header), but
//   `without_url()` keeps messages short anyway.
// Nothing here ever formats a ClientSecret, AccessToken, PkceCodeVerifier, Nonce or
// CsrfToken: their Debug impls print "[redacted]" anyway.

pub fn http_error(e: &HttpErr) -> String {
    match e {
        HttpClientError::Reqwest(re) => {
            let kind = if re.is_timeout() {
                "timed out"
            } else if re.is_connect() {
                "could not connect"
            } else if re.is_redirect() {
                "redirect refused"
            } else if re.is_body() || re.is_decode() {
                "could not read the response"
            } else if re.is_request() {
                "request failed"
            } else {
                "HTTP error"
            };
            let host = re
                .url()
                .and_then(|u| u.host_str())
                .unwrap_or("identity provider");
            format!("{kind} ({host})")
        }
        HttpClientError::Http(_) => "could not build the HTTP request".into(),
        HttpClientError::Io(e) => format!("I/O error: {}", e.kind()),
        HttpClientError::Other(s) => s.clone(),
        // HttpClientError is #[non_exhaustive]
        _ => "HTTP error".into(),
    }
}

fn serde_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_json::error::Category;
    let what = match e.inner().classify() {
        Category::Io => "I/O error",
        Category::Syntax => "not valid JSON",
        Category::Data => "unexpected field type or value",
        Category::Eof => "truncated JSON",
    };
    let path = e.path().to_string();
    if path == "." {
        what.to_string()
    } else {
        format!("{what} at `{path}`")
    }
}

fn status_text(status: openidconnect::http::StatusCode) -> String {
    // e.g. "302 Found" -- a redirect shows up here because the client refuses to follow it.
    status.to_string()
}

pub fn discovery_error(e: &openidconnect::DiscoveryError<HttpErr>) -> String {
    use openidconnect::DiscoveryError as D;
    match e {
        D::Request(he) => http_error(he),
        D::Response(status, _body, msg) => {
            format!("provider answered HTTP {} ({msg})", status_text(*status))
        }
        D::Parse(pe) => format!(
            "provider metadata or JWKS is malformed: {}",
            serde_error(pe)
        ),
        D::UrlParse(pe) => format!("bad issuer URL: {pe}"),
        // "unexpected issuer URI `x` (expected `y`)" -- a trailing-slash mismatch shows here
        D::Validation(msg) => format!("provider metadata rejected: {msg}"),
        D::Other(msg) => msg.clone(),
        _ => "unknown discovery error".into(),
    }
}

pub fn token_error(
    e: &openidconnect::RequestTokenError<HttpErr, StandardErrorResponse<CoreErrorResponseType>>,
) -> String {
    use openidconnect::RequestTokenError as R;
    match e {
        // {"error":"invalid_grant","error_description":"..."}: IdP-provided, no secrets.
        R::ServerResponse(err) => {
            let mut s = format!("provider rejected the code: {}", err.error().as_ref());
            if let Some(d) = err.error_description() {
                // bound the length of IdP-provided text
                s.push_str(": ");
                s.extend(d.chars().take(200));
            }
            s
        }
        R::Request(he) => http_error(he),
        // NEVER include the body (second field): may contain tokens.
        R::Parse(pe, _body) => format!("token response is malformed: {}", serde_error(pe)),
        // e.g. "server returned empty error response", unexpected content-type
        // (RequestTokenError is not #[non_exhaustive]: no wildcard arm needed)
        R::Other(msg) => msg.clone(),
    }
}

pub fn signature_error(e: &openidconnect::SignatureVerificationError) -> String {
    use openidconnect::SignatureVerificationError as S;
    match e {
        S::NoMatchingKey => {
            "ID token is signed with a key the provider does not publish (unknown kid)".into()
        }
        S::AmbiguousKeyId(m) => format!("several provider keys match the ID token: {m}"),
        S::CryptoError(_) => "ID token signature is invalid".into(),
        S::DisallowedAlg(m) => format!("ID token signature algorithm not allowed: {m}"),
        S::InvalidKey(m) => format!("provider key unusable: {m}"),
        S::NoSignature => "ID token is unsigned".into(),
        S::UnsupportedAlg(a) => format!("ID token signature algorithm unsupported: {a}"),
        S::Other(m) => m.clone(),
        _ => "ID token signature check failed".into(),
    }
}

pub fn claims_error(e: &openidconnect::ClaimsVerificationError) -> String {
    use openidconnect::ClaimsVerificationError as C;
    match e {
        C::Expired(m) => format!("ID token expired: {m}"),
        C::InvalidAudience(m) => format!("ID token is for another client: {m}"),
        C::InvalidIssuer(m) => format!("ID token issuer mismatch: {m}"),
        // the message is just "nonce mismatch"/"missing nonce claim"; no values
        C::InvalidNonce(m) => format!("ID token nonce check failed ({m}): restart sign-in"),
        C::InvalidSubject(m) => format!("subject mismatch: {m}"),
        C::InvalidAuthContext(m) => format!("acr rejected: {m}"),
        C::InvalidAuthTime(m) => format!("auth_time rejected: {m}"),
        C::SignatureVerification(se) => signature_error(se),
        C::Unsupported(m) => format!("unsupported ID token: {m}"),
        C::Other(m) => m.clone(),
        _ => "ID token verification failed".into(),
    }
}

pub fn userinfo_error(e: &openidconnect::UserInfoError<HttpErr>) -> String {
    use openidconnect::UserInfoError as U;
    match e {
        U::ClaimsVerification(ce) => claims_error(ce), // incl. sub mismatch
        U::Parse(pe) => format!("userinfo response is malformed: {}", serde_error(pe)),
        U::Request(he) => http_error(he),
        U::Response(status, _body, msg) => format!("HTTP {}: {msg}", status_text(*status)),
        U::Other(m) => m.clone(),
        _ => "unknown userinfo error".into(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
