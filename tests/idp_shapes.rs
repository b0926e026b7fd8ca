//! Access tokens shaped like the ones the IdPs users put in front of MCP servers really issue
//! (claims, header `typ`, `kid` style; /work/shared/reference/iam-facts.md), through the gRPC
//! Check: each is allowed under the issuer settings the README's "Using … as the authorization
//! server" sections give, and the usual misconfiguration is denied as the decision matrix says.

mod common;

use common::*;
use serde_json::{Value, json};

const RESOURCE: &str = "https://mcp.example.com/mcp";

/// Entra ID tenant and the API's application (client) id, as in Microsoft's samples.
const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const API_APP: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
const CLIENT_APP: &str = "1f8a3c1e-6f51-4b59-93e8-2a4f03d0b6a7";

/// The configuration: one resource trusting `issuer` with keys from `jwks` (a local JWKS),
/// `settings` added to the issuer entry, and a single route `/mcp` needing `scope`.
fn yaml(issuer: &str, jwks: &str, settings: &str, scope: &str) -> String {
    let settings: String = settings
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("        {}\n", l.trim()))
        .collect();
    format!(
        r#"
listen: {{grpc: "127.0.0.1:0", admin: "127.0.0.1:0"}}
identity: {{scopes_header: x-mcp-authz-scopes}}
resources:
  - id: files
    uri: {RESOURCE}
    realm: MCP Server
    issuers:
      - issuer: "{issuer}"
        jwks_uri: {jwks}/jwks
        algorithms: [RS256]
{settings}
    routes:
      - {{name: mcp, path_prefix: /mcp, scopes: ["{scope}"]}}
"#
    )
}

/// An app as [`yaml`] builds it, its JWKS holding the shared RSA key under `kid`.
async fn app(issuer: &str, kid: &str, settings: &str, scope: &str) -> Harness {
    let mut jwk = RSA.jwk();
    jwk["kid"] = json!(kid);
    let idp = Idp::start_with(json!({"keys": [jwk]})).await;
    let yaml = yaml(issuer, &idp.issuer, settings, scope);
    Harness::start(idp, &yaml, true).await
}

/// Check one token, signed by the shared RSA key, against a fresh [`app`].
async fn decide(
    issuer: &str,
    settings: &str,
    scope: &str,
    header: &Value,
    claims: &Value,
) -> Answer {
    let kid = header["kid"].as_str().expect("every IdP sends a kid");
    let mut h = app(issuer, kid, settings, scope).await;
    let token = RSA.mint_with_header(header, claims);
    h.bearer("POST", "/mcp", &token).await
}

fn allowed(a: &Answer, what: &str) {
    assert_eq!(a.status, 200, "{what}: {a:?}");
}

/// 401 with `error="invalid_token"` and this reason (decision matrix: bad token).
fn invalid_token(a: &Answer, reason: &str, what: &str) {
    assert_eq!(a.status, 401, "{what}: {a:?}");
    assert!(
        a.www()
            .is_some_and(|w| w.contains("error=\"invalid_token\"")),
        "{what}: {a:?}"
    );
    assert_eq!(a.reason(), reason, "{what}");
}

/// 403 `insufficient_scope` naming `scope` (decision matrix: scopes short).
fn insufficient(a: &Answer, scope: &str, what: &str) {
    assert_eq!(a.status, 403, "{what}: {a:?}");
    let www = a.www().unwrap_or_default();
    assert!(
        www.contains("error=\"insufficient_scope\"") && www.contains(&format!("scope=\"{scope}")),
        "{what}: {www}"
    );
}

fn header(a: &Answer, name: &str) -> Option<String> {
    a.headers.get(name).cloned()
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

// ---- Keycloak ----

const KEYCLOAK: &str = "https://kc.example.com/realms/mcp";

/// Keycloak 26: kid is a base64url key id; the payload `typ` says `Bearer`; the audience mapper
/// adds the resource beside the default `account`.
fn keycloak() -> (Value, Value) {
    let t = now();
    (
        json!({"alg": "RS256", "typ": "JWT", "kid": "x6sqd0Tp0hD8rXKJeP2AaSdF5oZLRn0mXb2zZ2nP3Uo"}),
        json!({"exp": t + 300, "iat": t, "auth_time": t, "jti": "onrtac:5b3c0f0e-4d3a-4c36-9b7e-0f0a5a1e2c11",
            "iss": KEYCLOAK, "aud": [RESOURCE, "account"], "sub": "0b7b5a46-9a3b-4f2a-8d2c-6c1f9e4b3a21",
            "typ": "Bearer", "azp": "mcp-inspector", "sid": "4e0f5a49-2d55-4a8f-9b51-7b3f0f2ad9a1",
            "acr": "1", "allowed-origins": ["http://localhost:6274"],
            "realm_access": {"roles": ["default-roles-mcp", "offline_access", "uma_authorization"]},
            "resource_access": {"account": {"roles": ["manage-account", "view-profile"]}},
            "scope": "openid email profile files:read", "email_verified": false,
            "preferred_username": "alice"}),
    )
}

#[tokio::test]
async fn keycloak_access_token() {
    let (h, c) = keycloak();
    let a = decide(KEYCLOAK, "", "files:read", &h, &c).await;
    allowed(&a, "keycloak");
    assert_eq!(
        header(&a, "x-mcp-authz-client-id").as_deref(),
        Some("mcp-inspector")
    );
    assert_eq!(
        header(&a, "x-mcp-authz-scopes").as_deref(),
        Some("openid email profile files:read")
    );
    // No audience mapper: only `account`.
    let mut no_mapper = c.clone();
    no_mapper["aud"] = json!("account");
    let a = decide(KEYCLOAK, "", "files:read", &h, &no_mapper).await;
    invalid_token(
        &a,
        "token_wrong_audience",
        "keycloak without an audience mapper",
    );
    // Its other kinds under the same key, issuer and audience.
    for kind in ["Refresh", "Offline", "ID"] {
        let mut other = c.clone();
        other["typ"] = json!(kind);
        let a = decide(KEYCLOAK, "", "files:read", &h, &other).await;
        invalid_token(&a, "token_not_access_token", kind);
    }
    // The realm URL without /realms/<name> is another issuer.
    let a = decide("https://kc.example.com", "", "files:read", &h, &c).await;
    invalid_token(
        &a,
        "token_unknown_issuer",
        "keycloak issuer without the realm",
    );
}

// ---- Auth0 ----

/// Auth0's issuer ends with a slash.
const AUTH0: &str = "https://tenant.eu.auth0.com/";

/// An Auth0 user token for an API with RBAC and "Add Permissions in the Access Token": the
/// permissions in an array, the OIDC scopes in `scope`, the /userinfo audience beside the API.
fn auth0() -> (Value, Value) {
    let t = now();
    (
        json!({"alg": "RS256", "typ": "JWT", "kid": "qRkQk8bUoZ2V3hXn9aV7T"}),
        json!({"iss": AUTH0, "sub": "auth0|65f0c0ffee0123456789abcd",
            "aud": [RESOURCE, "https://tenant.eu.auth0.com/userinfo"], "iat": t, "exp": t + 86400,
            "scope": "openid profile email", "azp": "Xk3mZ8pQ2rT5vW9yB1cD4fG6hJ0kL7nA",
            "permissions": ["files:list", "files:read"]}),
    )
}

#[tokio::test]
async fn auth0_permissions() {
    let (h, c) = auth0();
    let settings = "scope_claims: [scope, permissions]";
    let a = decide(AUTH0, settings, "files:read", &h, &c).await;
    allowed(&a, "auth0 with permissions");
    assert_eq!(
        header(&a, "x-mcp-authz-scopes").as_deref(),
        Some("openid profile email files:list files:read")
    );
    assert_eq!(
        header(&a, "x-mcp-authz-client-id").as_deref(),
        Some("Xk3mZ8pQ2rT5vW9yB1cD4fG6hJ0kL7nA")
    );
    // Default scope_claims: the permissions are not read.
    let a = decide(AUTH0, "", "files:read", &h, &c).await;
    insufficient(
        &a,
        "files:read",
        "auth0 without permissions in scope_claims",
    );
    // RBAC without "Add Permissions in the Access Token": no permissions claim.
    let a = decide(
        AUTH0,
        settings,
        "files:read",
        &h,
        &without(c.clone(), "permissions"),
    )
    .await;
    insufficient(&a, "files:read", "auth0 without the permissions claim");
    // The issuer without its trailing slash is another string.
    let a = decide(
        "https://tenant.eu.auth0.com",
        settings,
        "files:read",
        &h,
        &c,
    )
    .await;
    invalid_token(&a, "token_unknown_issuer", "auth0 issuer without the slash");
    // No API audience requested: Auth0 issues a token for /userinfo only (or an opaque one).
    let mut no_api = c.clone();
    no_api["aud"] = json!("https://tenant.eu.auth0.com/userinfo");
    let a = decide(AUTH0, settings, "files:read", &h, &no_api).await;
    invalid_token(&a, "token_wrong_audience", "auth0 without an API audience");
    // A machine-to-machine token (client credentials): `gty`, no OIDC scopes.
    let t = now();
    let m2m = json!({"iss": AUTH0, "sub": "Xk3mZ8pQ2rT5vW9yB1cD4fG6hJ0kL7nA@clients",
        "aud": RESOURCE, "iat": t, "exp": t + 86400, "scope": "files:read",
        "gty": "client-credentials", "azp": "Xk3mZ8pQ2rT5vW9yB1cD4fG6hJ0kL7nA",
        "permissions": ["files:read"]});
    let a = decide(AUTH0, settings, "files:read", &h, &m2m).await;
    allowed(&a, "auth0 m2m");
    // A permissions claim that is not an array of scope names is malformed.
    let mut bad = c.clone();
    bad["permissions"] = json!(["files:read", {"id": "files:write"}]);
    let a = decide(AUTH0, settings, "files:read", &h, &bad).await;
    invalid_token(&a, "token_malformed", "auth0 permissions with an object");
}

// ---- Okta ----

const OKTA: &str = "https://dev-123456.okta.com/oauth2/default";

/// An Okta custom authorization server's access token: no header `typ`, `ver: 1`, scopes in the
/// `scp` array, the client in `cid`, the user id in `uid`.
fn okta() -> (Value, Value) {
    let t = now();
    (
        json!({"kid": "N1vJ3c2aRGRNUk9sQ0l4cEtkbmhWc2s1bTRmUXc3bHQ", "alg": "RS256"}),
        json!({"ver": 1, "jti": "AT.4mVJqkZ3lTzXcE0nR9w2xYbQeA1oH7sF5dG8jK6uP", "iss": OKTA,
            "aud": RESOURCE, "iat": t, "exp": t + 3600, "cid": "0oa8f5j3ecb5w3dF35d7",
            "uid": "00u8f5j3ecb5w3dF35d7", "scp": ["openid", "files:read"], "auth_time": t,
            "sub": "alice@example.com"}),
    )
}

#[tokio::test]
async fn okta_scp_array_and_cid() {
    let (h, c) = okta();
    let a = decide(OKTA, "client_id_claims: [cid]", "files:read", &h, &c).await;
    allowed(&a, "okta");
    assert_eq!(
        header(&a, "x-mcp-authz-client-id").as_deref(),
        Some("0oa8f5j3ecb5w3dF35d7")
    );
    assert_eq!(
        header(&a, "x-mcp-authz-scopes").as_deref(),
        Some("openid files:read")
    );
    // Default client_id_claims do not know `cid`: allowed, but no client id goes upstream
    // (and a client-sent copy of the header is stripped).
    let a = decide(OKTA, "", "files:read", &h, &c).await;
    allowed(&a, "okta, default client_id_claims");
    assert_eq!(header(&a, "x-mcp-authz-client-id"), None);
    assert!(
        a.removed.iter().any(|r| r == "x-mcp-authz-client-id"),
        "{a:?}"
    );
    // scope_claims without scp: no scopes.
    let a = decide(OKTA, "scope_claims: [scope]", "files:read", &h, &c).await;
    insufficient(&a, "files:read", "okta with scope_claims [scope]");
    // The default authorization server's audience.
    let mut default_as = c.clone();
    default_as["aud"] = json!("api://default");
    let a = decide(OKTA, "", "files:read", &h, &default_as).await;
    invalid_token(&a, "token_wrong_audience", "okta api://default");
    // The org authorization server is another issuer.
    let a = decide("https://dev-123456.okta.com", "", "files:read", &h, &c).await;
    invalid_token(&a, "token_unknown_issuer", "okta org AS");
}

// ---- Microsoft Entra ID ----

fn entra_v2_issuer() -> String {
    format!("https://login.microsoftonline.com/{TENANT}/v2.0")
}

fn entra_v1_issuer() -> String {
    format!("https://sts.windows.net/{TENANT}/")
}

/// Entra's header: `x5t` and `kid` both name the signing certificate.
fn entra_header() -> Value {
    json!({"typ": "JWT", "alg": "RS256", "x5t": "nOo3ZDrODXEK1jKWhXslHR_KXEg",
        "kid": "nOo3ZDrODXEK1jKWhXslHR_KXEg"})
}

/// A v2 delegated token: `aud` is the API's application id, scopes in the `scp` string.
fn entra_v2_delegated() -> Value {
    let t = now();
    json!({"aud": API_APP, "iss": entra_v2_issuer(), "iat": t, "nbf": t, "exp": t + 3900,
        "aio": "AXQAi/8TAAAA", "azp": CLIENT_APP, "azpacr": "0", "name": "Alice",
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "preferred_username": "alice@contoso.com",
        "rh": "0.AAAA", "scp": "Files.Read Files.List",
        "sub": "MF4f-ggWMEji12KynJUNQZphaUTvLcQug5jdF2nl01Q", "tid": TENANT,
        "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0"})
}

/// A v2 app-only (client-credentials) token: application permissions in `roles`, no `scp`.
fn entra_v2_app_only() -> Value {
    let t = now();
    json!({"aud": format!("api://{API_APP}"), "iss": entra_v2_issuer(), "iat": t, "nbf": t,
        "exp": t + 3599, "aio": "E2ZgYJjd", "azp": CLIENT_APP, "azpacr": "1", "idtyp": "app",
        "oid": "2d6a5f0b-81f3-4b06-9f0c-9b1a2c3d4e5f", "rh": "0.AAAA",
        "roles": ["Files.Read.All"], "sub": "2d6a5f0b-81f3-4b06-9f0c-9b1a2c3d4e5f", "tid": TENANT,
        "uti": "Zq9yB3xM", "ver": "2.0"})
}

/// A v1 token: the sts.windows.net issuer, the client in `appid`.
fn entra_v1() -> Value {
    let t = now();
    json!({"aud": format!("api://{API_APP}"), "iss": entra_v1_issuer(), "iat": t, "nbf": t,
        "exp": t + 3900, "acr": "1", "aio": "AVQAq/8T", "amr": ["pwd"], "appid": CLIENT_APP,
        "appidacr": "0", "family_name": "Smith", "given_name": "Alice", "ipaddr": "203.0.113.7",
        "name": "Alice Smith", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "rh": "0.AAAA",
        "scp": "Files.Read", "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA", "tid": TENANT,
        "unique_name": "alice@contoso.com", "upn": "alice@contoso.com", "uti": "fqiBqXLPj0eQa82S",
        "ver": "1.0"})
}

#[tokio::test]
async fn entra_v2_delegated_scp_and_app_id_audience() {
    let h = entra_header();
    let c = entra_v2_delegated();
    let iss = entra_v2_issuer();
    let settings = format!("extra_audiences: [\"{API_APP}\", \"api://{API_APP}\"]");
    let a = decide(&iss, &settings, "Files.Read", &h, &c).await;
    allowed(&a, "entra v2 delegated");
    assert_eq!(
        header(&a, "x-mcp-authz-client-id").as_deref(),
        Some(CLIENT_APP)
    );
    assert_eq!(
        header(&a, "x-mcp-authz-scopes").as_deref(),
        Some("Files.Read Files.List")
    );
    // The api:// form of the same application.
    let mut api = c.clone();
    api["aud"] = json!(format!("api://{API_APP}"));
    allowed(
        &decide(&iss, &settings, "Files.Read", &h, &api).await,
        "entra api://",
    );
    // Without extra_audiences the application id is not this resource.
    let a = decide(&iss, "", "Files.Read", &h, &c).await;
    invalid_token(&a, "token_wrong_audience", "entra without extra_audiences");
    // A v2 token against the v1 issuer.
    let a = decide(&entra_v1_issuer(), &settings, "Files.Read", &h, &c).await;
    invalid_token(
        &a,
        "token_unknown_issuer",
        "entra v2 token, v1 issuer configured",
    );
}

#[tokio::test]
async fn entra_app_only_roles() {
    let h = entra_header();
    let c = entra_v2_app_only();
    let iss = entra_v2_issuer();
    let aud = format!("extra_audiences: [\"api://{API_APP}\"]");
    let a = decide(
        &iss,
        &format!("{aud}\nscope_claims: [scp, roles]"),
        "Files.Read.All",
        &h,
        &c,
    )
    .await;
    allowed(&a, "entra app-only with roles");
    assert_eq!(
        header(&a, "x-mcp-authz-scopes").as_deref(),
        Some("Files.Read.All")
    );
    let a = decide(
        &iss,
        &format!("{aud}\nscope_claims: [roles]"),
        "Files.Read.All",
        &h,
        &c,
    )
    .await;
    allowed(&a, "entra app-only, roles only");
    // Default scope_claims: app-only tokens have no scopes.
    let a = decide(&iss, &aud, "Files.Read.All", &h, &c).await;
    insufficient(
        &a,
        "Files.Read.All",
        "entra app-only without roles in scope_claims",
    );
    // Roles that are not a list of names are malformed.
    for bad in [
        json!("Files.Read.All"),
        json!(["Files.Read.All", 1]),
        json!(["Files.Read.All\n"]),
    ] {
        let mut c = c.clone();
        c["roles"] = bad.clone();
        let a = decide(
            &iss,
            &format!("{aud}\nscope_claims: [roles]"),
            "Files.Read.All",
            &h,
            &c,
        )
        .await;
        if bad.is_string() {
            // A string is a space-delimited list, as for every scope claim.
            allowed(&a, "roles as a string");
        } else {
            invalid_token(&a, "token_malformed", &bad.to_string());
        }
    }
}

/// A reload that changes `scope_claims` applies to tokens already verified and cached.
#[tokio::test]
async fn scope_claims_reload_applies_to_cached_tokens() {
    let h = entra_header();
    let iss = entra_v2_issuer();
    let aud = format!("extra_audiences: [\"api://{API_APP}\"]");
    let kid = h["kid"].as_str().unwrap();
    let mut app = app(&iss, kid, &aud, "Files.Read.All").await;
    let token = RSA.mint_with_header(&h, &entra_v2_app_only());
    insufficient(
        &app.bearer("POST", "/mcp", &token).await,
        "Files.Read.All",
        "before",
    );
    let dir = tempdir();
    let path = dir.join("config.yaml");
    let jwks = app.idp.issuer.clone();
    let with_roles = format!("{aud}\nscope_claims: [scp, roles]");
    std::fs::write(&path, yaml(&iss, &jwks, &with_roles, "Files.Read.All")).unwrap();
    app.app.reload(&path).expect("reload with roles");
    allowed(
        &app.bearer("POST", "/mcp", &token).await,
        "roles read after reload",
    );
    allowed(
        &app.bearer("POST", "/mcp", &token).await,
        "and from the cache",
    );
    std::fs::write(&path, yaml(&iss, &jwks, &aud, "Files.Read.All")).unwrap();
    app.app.reload(&path).expect("reload without roles");
    insufficient(
        &app.bearer("POST", "/mcp", &token).await,
        "Files.Read.All",
        "after",
    );
}

#[tokio::test]
async fn entra_v1_issuer_and_appid() {
    let h = entra_header();
    let c = entra_v1();
    let iss = entra_v1_issuer();
    let settings =
        format!("extra_audiences: [\"api://{API_APP}\"]\nclient_id_claims: [appid, azp]");
    let a = decide(&iss, &settings, "Files.Read", &h, &c).await;
    allowed(&a, "entra v1");
    assert_eq!(
        header(&a, "x-mcp-authz-client-id").as_deref(),
        Some(CLIENT_APP)
    );
    // The v2 issuer does not accept v1 tokens (set accessTokenAcceptedVersion: 2, or trust both).
    let a = decide(&entra_v2_issuer(), &settings, "Files.Read", &h, &c).await;
    invalid_token(
        &a,
        "token_unknown_issuer",
        "entra v1 token, v2 issuer configured",
    );
}

// ---- Casdoor / Hanzo IAM ----

const CASDOOR: &str = "https://iam.example.com";
const CASDOOR_CLIENT: &str = "4a3e5f1c2b9d8e7f6a5b";

/// Casdoor's JWT-Standard access token: kid = the certificate name, `tokenType`, the user's
/// `owner`/`name`, `scope` string, `azp`; `aud` = the RFC 8707 resource the client asked for.
fn casdoor() -> (Value, Value) {
    let t = now();
    (
        json!({"alg": "RS256", "kid": "cert-built-in", "typ": "JWT"}),
        json!({"owner": "built-in", "name": "alice", "tokenType": "access-token", "iss": CASDOOR,
            "sub": "2f3a8b6c-0d1e-4f5a-9b8c-7d6e5f4a3b2c", "aud": [RESOURCE], "exp": t + 604800,
            "nbf": t, "iat": t, "jti": "admin/8c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f",
            "scope": "openid profile files:read", "azp": CASDOOR_CLIENT, "tag": "staff",
            "signupApplication": "app-built-in"}),
    )
}

#[tokio::test]
async fn casdoor_and_hanzo_iam() {
    let (h, c) = casdoor();
    let a = decide(CASDOOR, "", "files:read", &h, &c).await;
    allowed(&a, "casdoor");
    assert_eq!(
        header(&a, "x-mcp-authz-client-id").as_deref(),
        Some(CASDOOR_CLIENT)
    );
    // No `resource` on the grant: aud is the client id.
    let mut client_aud = c.clone();
    client_aud["aud"] = json!([CASDOOR_CLIENT]);
    let a = decide(CASDOOR, "", "files:read", &h, &client_aud).await;
    invalid_token(&a, "token_wrong_audience", "casdoor aud = client id");
    let a = decide(
        CASDOOR,
        &format!("extra_audiences: [\"{CASDOOR_CLIENT}\"]"),
        "files:read",
        &h,
        &client_aud,
    )
    .await;
    allowed(&a, "casdoor aud = client id, accepted explicitly");
    // `origin` not set: the issuer follows the Host the client used.
    let mut by_host = c.clone();
    by_host["iss"] = json!("http://localhost:8000");
    let a = decide(CASDOOR, "", "files:read", &h, &by_host).await;
    invalid_token(
        &a,
        "token_unknown_issuer",
        "casdoor iss from the request host",
    );
    // Its refresh token: same key, issuer and audience.
    let mut refresh = c.clone();
    refresh["tokenType"] = json!("refresh-token");
    let a = decide(CASDOOR, "", "files:read", &h, &refresh).await;
    invalid_token(&a, "token_not_access_token", "casdoor refresh token");
    // A scope string with an empty item is not read as something else.
    let mut bad = c.clone();
    bad["scope"] = json!("openid  files:read");
    let a = decide(CASDOOR, "", "files:read", &h, &bad).await;
    invalid_token(&a, "token_malformed", "casdoor scope with two spaces");
    // Hanzo IAM: the same shape under a brand's canonical issuer.
    let (h, mut c) = casdoor();
    c["iss"] = json!("https://hanzo.id");
    c["owner"] = json!("hanzo");
    let a = decide(
        "https://hanzo.id",
        "",
        "files:read",
        &h,
        &without(c, "signupApplication"),
    )
    .await;
    allowed(&a, "hanzo iam");
}
