//! Builders for the manifest types, so a `describe` reads like the provider's documentation.

use crate::{
    ApiKey, AuthScheme, ClientAuth, CredentialPlacement, Manifest, Oauth2, Scope, TokenBody,
    TokenPaths,
};

impl Manifest {
    fn base(id: &str, display_name: &str, description: &str, auth: AuthScheme) -> Self {
        Manifest {
            id: id.into(),
            display_name: display_name.into(),
            version: "0.1.0".into(),
            description: description.into(),
            icon: String::new(),
            docs_url: None,
            auth,
            credential: CredentialPlacement::Bearer,
            scopes: Vec::new(),
            api_base_url: String::new(),
            api_headers: Vec::new(),
            egress_hosts: Vec::new(),
            config_schema: r#"{"type":"object","properties":{}}"#.into(),
            configurable: false,
            classifies_responses: false,
            categories: Vec::new(),
        }
    }

    /// A connector authorised with OAuth 2 (authorization code, PKCE on by default).
    pub fn oauth2(id: &str, display_name: &str, description: &str, oauth2: Oauth2) -> Self {
        Self::base(id, display_name, description, AuthScheme::Oauth2(oauth2))
    }

    /// A connector authenticated with an API key the user pastes, sent as a Bearer token by
    /// default.
    pub fn api_key(id: &str, display_name: &str, description: &str) -> Self {
        Self::base(
            id,
            display_name,
            description,
            AuthScheme::ApiKey(ApiKey {
                label: "API key".into(),
                help: String::new(),
            }),
        )
    }

    /// Sets the connector's version (semver).
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.into();
        self
    }
    /// Sets the icon (an SVG document).
    pub fn icon(mut self, svg: &str) -> Self {
        self.icon = svg.into();
        self
    }
    /// Adds a catalogue category (`crm`, `communication`, `email`, `meetings`, ...): the
    /// Integrations page groups and filters cards by them. Most relevant first.
    pub fn category(mut self, category: &str) -> Self {
        self.categories.push(category.into());
        self
    }
    /// Sets the provider documentation link.
    pub fn docs_url(mut self, url: &str) -> Self {
        self.docs_url = Some(url.into());
        self
    }
    /// Sets where the credential goes on API calls (default: Bearer).
    pub fn credential(mut self, placement: CredentialPlacement) -> Self {
        self.credential = placement;
        self
    }
    /// Sets the API base URL; `{field}` placeholders are filled from the connection's config.
    pub fn api_base_url(mut self, url: &str) -> Self {
        self.api_base_url = url.into();
        self
    }
    /// Adds a header sent on every API call.
    pub fn api_header(mut self, name: &str, value: &str) -> Self {
        self.api_headers.push((name.into(), value.into()));
        self
    }
    /// Allows requests to a host (`api.example.com`, or `*.example.com`).
    pub fn egress_host(mut self, host: &str) -> Self {
        self.egress_hosts.push(host.into());
        self
    }
    /// Adds a scope.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scopes.push(scope);
        self
    }
    /// Sets the per-connection config schema (a JSON Schema object with `default`s).
    pub fn config_schema(mut self, schema: serde_json::Value) -> Self {
        self.config_schema = schema.to_string();
        self
    }
    /// Sets the per-connection config schema from JSON text (cheaper than building a
    /// `serde_json::Value` on every `describe`). The host checks it is a valid JSON Schema.
    pub fn config_schema_text(mut self, schema: &str) -> Self {
        self.config_schema = schema.into();
        self
    }
    /// Marks this manifest as a template for providers described at runtime: the connector is
    /// used only through [`Connector::configure`](crate::Connector::configure).
    pub fn configurable(mut self) -> Self {
        self.configurable = true;
        self
    }
    /// Declares that this connector implements
    /// [`Connector::classify_response`](crate::Connector::classify_response) for answers with
    /// HTTP 200 (providers that put errors in a 200 body): the host's proxy then shows it small
    /// JSON answers. Without this the proxy classifies by status alone.
    pub fn classifies_responses(mut self) -> Self {
        self.classifies_responses = true;
        self
    }

    /// Sets the API-key form's label and help text (API-key connectors only).
    pub fn api_key_form(mut self, label: &str, help: &str) -> Self {
        if let AuthScheme::ApiKey(key) = &mut self.auth {
            key.label = label.into();
            key.help = help.into();
        }
        self
    }
}

impl Oauth2 {
    /// Standard OAuth 2: PKCE S256, client secret in the body, form token requests, space-separated
    /// scopes, RFC 6749 token response.
    pub fn new(authorize_url: &str, token_url: &str) -> Self {
        Oauth2 {
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
            refresh_url: None,
            revoke_url: None,
            issuer: None,
            iss_required: false,
            scope_separator: " ".into(),
            pkce: true,
            client_auth: ClientAuth::Body,
            token_body: TokenBody::Form,
            authorize_params: Vec::new(),
            token_params: Vec::new(),
            refresh_params: Vec::new(),
            token_paths: TokenPaths::default(),
        }
    }
    /// Sets a refresh endpoint other than the token endpoint.
    pub fn refresh_url(mut self, url: &str) -> Self {
        self.refresh_url = Some(url.into());
        self
    }
    /// Sets the RFC 7009 revocation endpoint.
    pub fn revoke_url(mut self, url: &str) -> Self {
        self.revoke_url = Some(url.into());
        self
    }
    /// Sets the issuer for RFC 9207 `iss` checks; `required` when the provider always sends it.
    pub fn issuer(mut self, issuer: &str, required: bool) -> Self {
        self.issuer = Some(issuer.into());
        self.iss_required = required;
        self
    }
    /// Sets the scope separator (default: a space).
    pub fn scope_separator(mut self, separator: &str) -> Self {
        self.scope_separator = separator.into();
        self
    }
    /// Switches PKCE off, for providers that reject it.
    pub fn without_pkce(mut self) -> Self {
        self.pkce = false;
        self
    }
    /// Sets how the client authenticates at the token endpoint.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }
    /// Sends token requests as JSON instead of a form.
    pub fn json_token_body(mut self) -> Self {
        self.token_body = TokenBody::Json;
        self
    }
    /// Adds a parameter to the authorize URL.
    pub fn authorize_param(mut self, name: &str, value: &str) -> Self {
        self.authorize_params.push((name.into(), value.into()));
        self
    }
    /// Adds a parameter to the code exchange.
    pub fn token_param(mut self, name: &str, value: &str) -> Self {
        self.token_params.push((name.into(), value.into()));
        self
    }
    /// Adds a parameter to refresh requests.
    pub fn refresh_param(mut self, name: &str, value: &str) -> Self {
        self.refresh_params.push((name.into(), value.into()));
        self
    }
    /// Sets where the token response's values are found.
    pub fn token_paths(mut self, paths: TokenPaths) -> Self {
        self.token_paths = paths;
        self
    }
}

impl Default for TokenPaths {
    /// RFC 6749 names everywhere, no metadata.
    fn default() -> Self {
        TokenPaths {
            access_token: Vec::new(),
            refresh_token: Vec::new(),
            expires_in: Vec::new(),
            refresh_token_expires_in: Vec::new(),
            scope: Vec::new(),
            token_type: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

impl Scope {
    /// A scope requested on every authorization.
    pub fn required(name: &str, description: &str) -> Self {
        Scope {
            name: name.into(),
            description: description.into(),
            required: true,
            param: None,
        }
    }
    /// A scope requested only when the user picks it.
    pub fn optional(name: &str, description: &str) -> Self {
        Scope {
            required: false,
            ..Self::required(name, description)
        }
    }
    /// Sends this scope in another authorize parameter (Slack's `user_scope`).
    pub fn in_param(mut self, param: &str) -> Self {
        self.param = Some(param.into());
        self
    }
}
