//! The `http` issuer: keys made and revoked through a service's admin API,
//! described operation by operation in the playbook.
//!
//! ```yaml
//! issuer:
//!   type: http
//!   base_url_env: KEYSERVICE_URL       # or base_url: http://127.0.0.1:8080
//!   auth:
//!     token_env: KEYSERVICE_ADMIN_TOKEN  # or token_file: path
//!   revocation: disable_then_delete    # or delete_only
//!   idempotency_header: Idempotency-Key
//!   run_tag: /metadata/keywheel_run
//!   old_key:
//!     match: {field: secret, pointer: /prefix, prefix_length: 12}
//!   operations:
//!     get:     {url: "/v1/keys/{{ key.id }}"}
//!     list:    {url: /v1/keys, items: /data}
//!     create:
//!       url: /v1/keys
//!       body:
//!         name: "{{ old.name }}"
//!         scopes: "{{ old.scopes }}"
//!         metadata: {keywheel_run: "{{ run.id }}"}
//!       expect_status: 201
//!       pick: {id: /id, secret: /secret}
//!     disable: {url: "/v1/keys/{{ key.id }}/disable"}
//!     enable:  {url: "/v1/keys/{{ key.id }}/enable"}
//!     delete:  {url: "/v1/keys/{{ key.id }}"}
//! ```
//!
//! Preflight finds the old key (see [`spec::OldKeySpec`]) and reads it with
//! `get` (or from `list`). The attributes the create templates name
//! (`old.scopes`, ...) are journaled in clear with the run, so every
//! attempt of the create sends the same body. Only those attributes are
//! kept, so a secret the API returns with the key stays out of the journal. The
//! create body is rendered at preflight too, so a template that names a
//! missing attribute stops the run before anything changes.
//!
//! Recovery after a crash between the create call and its journal record:
//! the create is sent again with the same idempotency key (the API replays
//! the first response), and keys listed with this run's `run_tag` whose
//! secret is lost are deleted.
//!
//! Responses are checked: a status outside `expect_status`, or a body without
//! a picked member, is an error that names the operation and the pointer.
//! Throttling (429), server errors (500, 502, 503, 504) and lost
//! connections are retried with backoff, except for a create without an
//! idempotency header, which could make a second key.

pub mod spec;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value};
use url::Url;

use super::{CurrentFields, Issuer, IssuerCx, IssuerError, IssuerSnapshot, Recovered, Revocation};
use crate::http_client::{self, HttpClient, Request, Response};
use crate::key::Key;
use crate::retry::{self, Failure};
use crate::secret::{Redactor, SecretBytes};
use crate::targets::SetupError;
use crate::template::{Root, Vars};
use spec::{HttpSpec, Operation};

pub struct HttpIssuer {
    spec: HttpSpec,
    client: HttpClient,
    base_url: Option<Url>,
    token: Option<SecretBytes>,
    /// The old key's id from `old_key.id_env`, read at build.
    old_key_id: Option<String>,
    redactor: Redactor,
}

/// The preflight state that is journaled: public attributes only.
#[derive(serde::Serialize, serde::Deserialize)]
struct HttpState {
    /// The old key's id and the attributes the create templates use.
    old: Map<String, Value>,
    found_by: String,
}

impl HttpIssuer {
    /// Builds the issuer, reading the variables and files it names. `path`
    /// is the issuer's field path, for errors.
    pub fn new(spec: HttpSpec, path: &str) -> Result<Self, SetupError> {
        let setup = |field: &str, message: String| SetupError {
            field: format!("{path}.{field}"),
            message,
        };
        let base_url = match &spec.base_url {
            Some(base) => Some(base.resolve().map_err(|m| setup("base_url_env", m))?),
            None => None,
        };
        let token = match &spec.auth {
            Some(auth) => Some(auth.token.read().map_err(|m| setup("auth", m))?),
            None => None,
        };
        let old_key_id = match &spec.old_key.id_env {
            Some(name) => Some(
                std::env::var(name)
                    .ok()
                    .map(|id| id.trim().to_string())
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| {
                        setup(
                            "old_key.id_env",
                            format!("environment variable {name} is not set or empty; export the id of the key in use in it"),
                        )
                    })?,
            ),
            None => None,
        };
        let client = HttpClient::new(spec.timeout).map_err(|m| setup("timeout", m))?;
        let mut redactor = Redactor::new();
        if let Some(token) = &token {
            redactor.add(token);
        }
        Ok(Self {
            spec,
            client,
            base_url,
            token,
            old_key_id,
            redactor,
        })
    }

    /// Renders an operation into a request.
    fn request(&self, op: &Operation, vars: &Vars) -> Result<Request, IssuerError> {
        let misconfigured = |message: String| {
            IssuerError::Misconfigured(format!("http issuer: {}: {message}", op.name))
        };
        let rendered = op
            .url
            .render_url(vars)
            .map_err(|err| misconfigured(err.to_string()))?;
        let url = http_client::resolve_url(self.base_url.as_ref(), &rendered)
            .map_err(|m| misconfigured(format!("{}.url: {m}", op.path)))?;
        let mut headers = HeaderMap::new();
        if let (Some(auth), Some(token)) = (&self.spec.auth, &self.token) {
            let token = token.expose_str().ok_or_else(|| {
                misconfigured(format!(
                    "the admin token in {} is not UTF-8 text",
                    auth.token.describe()
                ))
            })?;
            let value = if auth.scheme.is_empty() {
                zeroize::Zeroizing::new(token.to_string())
            } else {
                zeroize::Zeroizing::new(format!("{} {token}", auth.scheme))
            };
            let (name, value) = http_client::header(&auth.header, &value).map_err(misconfigured)?;
            headers.insert(name, value);
        }
        for (name, template) in &op.headers {
            let value = template
                .render_text(vars)
                .map_err(|err| misconfigured(err.to_string()))?;
            let (name, value) = http_client::header(name, &value).map_err(misconfigured)?;
            headers.insert(name, value);
        }
        let body = match &op.body {
            Some(body) => Some(
                body.render(vars)
                    .map_err(|err| misconfigured(err.to_string()))?,
            ),
            None => None,
        };
        Ok(Request {
            method: op.method.clone(),
            url,
            headers,
            body,
        })
    }

    /// Sends an operation, retrying where that is safe, and returns an
    /// response whose status is expected (or, for delete, means "absent").
    async fn call(
        &self,
        cx: &IssuerCx,
        op: &Operation,
        vars: &Vars,
        extra_header: Option<(&str, &str)>,
        retry_allowed: bool,
    ) -> Result<Response, IssuerError> {
        let mut request = self.request(op, vars)?;
        if let Some((name, value)) = extra_header {
            let (name, value) = http_client::header(name, value).map_err(|m| {
                IssuerError::Misconfigured(format!("http issuer: {}: {m}", op.name))
            })?;
            request.headers.insert(name, value);
        }
        let what = format!("{} ({} {})", op.name, op.method, request.url);
        let label = format!("http issuer {}", op.name);
        retry::retry(&cx.retry, &label, |_| {
            let request = &request;
            let what = &what;
            async move {
                let response = match self.client.send(request).await {
                    Ok(response) => response,
                    Err(err) => {
                        let error = IssuerError::Unavailable(format!("http issuer: {what}: {err}"));
                        return Err(match retry_allowed {
                            true => Failure::retryable(error),
                            false => Failure::Fatal(error),
                        });
                    }
                };
                if op.expect_status.contains(&response.status)
                    || op.absent_status.contains(&response.status)
                {
                    return Ok(response);
                }
                let error = self.status_error(op, what, &response);
                if retry_allowed && response.is_retryable() {
                    return Err(Failure::Retryable {
                        error,
                        retry_after: response.retry_after,
                    });
                }
                Err(Failure::Fatal(error))
            }
        })
        .await
    }

    fn status_error(&self, op: &Operation, what: &str, response: &Response) -> IssuerError {
        let expected: Vec<String> = op.expect_status.iter().map(u16::to_string).collect();
        let message = format!(
            "http issuer: {what}: unexpected status {} (expected {}): {}",
            response.status,
            expected.join(" or "),
            response.describe(&self.redactor)
        );
        match response.status {
            401 | 403 => IssuerError::Denied(format!(
                "{message}; check that the admin credential is valid and may {} keys",
                op.name
            )),
            429 | 500..=599 => IssuerError::Unavailable(message),
            _ => IssuerError::InvalidResponse(message),
        }
    }

    /// Parses a response as JSON; names the operation when it is not.
    fn json(&self, op: &Operation, response: &Response) -> Result<Value, IssuerError> {
        response.json(&self.redactor).map_err(|described| {
            IssuerError::InvalidResponse(format!(
                "http issuer: {}: expected a JSON response (status {}), got {described}",
                op.name, response.status
            ))
        })
    }

    fn vars(&self, cx: &IssuerCx) -> Vars {
        let mut vars = Vars::new();
        vars.set_run(&cx.run_id);
        vars
    }

    fn key_vars(&self, cx: &IssuerCx, key_id: &str) -> Vars {
        let mut vars = self.vars(cx);
        vars.set(Root::Key, serde_json::json!({ "id": key_id }));
        vars
    }

    /// Lists the keys; returns the key objects.
    // NOTE: only the first page is read; an API that pages its key list
    // needs a filter in the list URL that keeps the keys on one page.
    async fn list(&self, cx: &IssuerCx) -> Result<Vec<Value>, IssuerError> {
        let Some(op) = &self.spec.operations.list else {
            return Err(IssuerError::Misconfigured(
                "http issuer: the playbook describes no list operation".into(),
            ));
        };
        let response = self.call(cx, op, &self.vars(cx), None, true).await?;
        let body = self.json(op, &response)?;
        match body.pointer(&op.object) {
            Some(Value::Array(items)) => Ok(items.clone()),
            _ => Err(IssuerError::InvalidResponse(format!(
                "http issuer: list: the response (status {}) has no list at {:?} ({}.items)",
                response.status, op.object, op.path
            ))),
        }
    }

    /// Returns the id of a listed key object.
    fn item_id(&self, item: &Value) -> Option<String> {
        let pointer = self.spec.operations.list.as_ref()?.item_id.as_str();
        id_text(item.pointer(pointer)?)
    }

    /// Finds the key in use: its id, how it was found, and its listed
    /// object when a list found it.
    /// Checks that key `id`, found by an id the targets hold, is also the
    /// key whose secret they hold, where `old_key.match` defines the match.
    /// Otherwise one key would be revoked while another stays in use.
    fn check_old_matches(
        &self,
        id: &str,
        object: &Value,
        current: &CurrentFields,
    ) -> Result<(), IssuerError> {
        let Some(matcher) = &self.spec.old_key.matcher else {
            return Ok(());
        };
        let Some(value) = current
            .get(&matcher.field)
            .and_then(SecretBytes::expose_str)
        else {
            return Ok(());
        };
        let Some(found) = object.pointer(&matcher.pointer).and_then(Value::as_str) else {
            return Ok(());
        };
        let needle = matcher.needle(value);
        if found == needle {
            return Ok(());
        }
        Err(IssuerError::Misconfigured(format!(
            "http issuer: key {id}, named by the id the targets hold, is not the key whose {} they hold ({} differs); make every target hold the key in use, then run again",
            matcher.field, matcher.pointer
        )))
    }

    async fn identify_old(
        &self,
        cx: &IssuerCx,
        current: &CurrentFields,
    ) -> Result<(String, String, Option<Value>), IssuerError> {
        if let (Some(id), Some(name)) = (&self.old_key_id, &self.spec.old_key.id_env) {
            return Ok((id.clone(), format!("id from {name}"), None));
        }
        if let Some(id) = current
            .get(crate::key::ID_FIELD)
            .and_then(SecretBytes::expose_str)
        {
            return Ok((id.to_string(), "id held by the targets".into(), None));
        }
        let Some(matcher) = &self.spec.old_key.matcher else {
            return Err(IssuerError::Misconfigured(
                "http issuer: cannot tell which key is in use: no target holds the key field `id`; set issuer.old_key.match (find it by the value the targets hold) or issuer.old_key.id_env".into(),
            ));
        };
        let Some(value) = current
            .get(&matcher.field)
            .and_then(SecretBytes::expose_str)
        else {
            return Err(IssuerError::Misconfigured(format!(
                "http issuer: cannot find the key in use: no target holds a value for key field {:?}; check the targets' `set` mappings, or name the key's id in issuer.old_key.id_env",
                matcher.field
            )));
        };
        let needle = matcher.needle(value);
        let items = self.list(cx).await?;
        let matches: Vec<&Value> = items
            .iter()
            .filter(|item| item.pointer(&matcher.pointer).and_then(Value::as_str) == Some(&needle))
            .collect();
        match matches.as_slice() {
            [item] => {
                let id = self.item_id(item).ok_or_else(|| {
                    IssuerError::InvalidResponse(format!(
                        "http issuer: list: the key that matches has no id at {:?}",
                        self.spec
                            .operations
                            .list
                            .as_ref()
                            .map_or("", |op| op.item_id.as_str())
                    ))
                })?;
                let how = format!(
                    "matched on {} by the {} the targets hold",
                    matcher.pointer, matcher.field
                );
                Ok((id, how, Some((*item).clone())))
            }
            [] => Err(IssuerError::Misconfigured(format!(
                "http issuer: none of the {} listed keys has {} matching the {} the targets hold; the targets may hold a key of another account, or it was deleted",
                items.len(),
                matcher.pointer,
                matcher.field
            ))),
            several => {
                let ids: Vec<String> = several
                    .iter()
                    .filter_map(|item| self.item_id(item))
                    .collect();
                Err(IssuerError::Misconfigured(format!(
                    "http issuer: {} listed keys match the {} the targets hold ({}); set a longer prefix_length, or name the key's id in issuer.old_key.id_env",
                    several.len(),
                    matcher.field,
                    ids.join(", ")
                )))
            }
        }
    }

    /// Reads the old key's object: with `get`, or from the listed keys.
    async fn read_old(
        &self,
        cx: &IssuerCx,
        id: &str,
        listed: Option<Value>,
    ) -> Result<Value, IssuerError> {
        if let Some(op) = &self.spec.operations.get {
            let response = self
                .call(cx, op, &self.key_vars(cx, id), None, true)
                .await?;
            let body = self.json(op, &response)?;
            return match body.pointer(&op.object) {
                Some(object @ Value::Object(_)) => Ok(object.clone()),
                _ => Err(IssuerError::InvalidResponse(format!(
                    "http issuer: get: the response (status {}) has no key object at {:?} ({}.key)",
                    response.status, op.object, op.path
                ))),
            };
        }
        if let Some(item) = listed {
            return Ok(item);
        }
        let items = self.list(cx).await?;
        items
            .into_iter()
            .find(|item| self.item_id(item).as_deref() == Some(id))
            .ok_or_else(|| {
                IssuerError::Misconfigured(format!(
                    "http issuer: key {id} is not among the listed keys; check the id, or describe a get operation"
                ))
            })
    }

    /// Builds the new key from a create response.
    fn key_from_response(
        &self,
        response: &Response,
        old: &Map<String, Value>,
    ) -> Result<Key, IssuerError> {
        let op = &self.spec.operations.create;
        let body = self.json(op, response)?;
        let missing = |field: &str, pointer: &str| {
            IssuerError::InvalidResponse(format!(
                "http issuer: create: the response (status {}) has no {field} at {pointer:?} ({}.pick.{field}); the key may exist at the issuer without keywheel knowing its secret",
                response.status, op.path
            ))
        };
        let mut id = None;
        let mut fields = Vec::new();
        for (field, pointer) in &op.pick {
            let value = body.pointer(pointer);
            if field == crate::key::ID_FIELD {
                id = Some(
                    value
                        .and_then(id_text)
                        .ok_or_else(|| missing(field, pointer))?,
                );
            } else {
                let text = value
                    .and_then(Value::as_str)
                    .filter(|text| !text.is_empty())
                    .ok_or_else(|| missing(field, pointer))?;
                fields.push((field.clone(), SecretBytes::from_text(text)));
            }
        }
        let Some(id) = id else {
            return Err(missing(crate::key::ID_FIELD, "/id"));
        };
        let mut key = Key::new(id);
        for (field, value) in fields {
            key = key.with_field(field, value);
        }
        key.attributes = old.clone();
        key.attributes.remove(crate::key::ID_FIELD);
        Ok(key)
    }

    fn create_vars(&self, cx: &IssuerCx, old: &Map<String, Value>) -> Vars {
        let mut vars = self.vars(cx);
        vars.set(Root::Old, Value::Object(old.clone()));
        vars
    }

    /// Sends the create with the run's idempotency key, when configured.
    async fn send_create(
        &self,
        cx: &IssuerCx,
        old: &Map<String, Value>,
    ) -> Result<Key, IssuerError> {
        let op = &self.spec.operations.create;
        let idempotency_key = crate::template::idempotency_key(&cx.run_id);
        let header = self
            .spec
            .idempotency_header
            .as_deref()
            .map(|name| (name, idempotency_key.as_str()));
        let response = self
            .call(cx, op, &self.create_vars(cx, old), header, header.is_some())
            .await?;
        match self.key_from_response(&response, old) {
            Ok(key) => Ok(key),
            Err(err) => Err(self.discard_incomplete(cx, &response, old, err).await),
        }
    }

    /// Deletes the key a create answered with an id but without a usable
    /// secret: nobody can use it, and a failed generate must leave nothing
    /// behind. Never deletes the key in use.
    async fn discard_incomplete(
        &self,
        cx: &IssuerCx,
        response: &Response,
        old: &Map<String, Value>,
        err: IssuerError,
    ) -> IssuerError {
        let op = &self.spec.operations.create;
        let id = op
            .pick
            .iter()
            .find(|(field, _)| field == crate::key::ID_FIELD)
            .and_then(|(_, pointer)| {
                self.json(op, response)
                    .ok()?
                    .pointer(pointer)
                    .and_then(id_text)
            });
        let Some(id) = id else {
            return err;
        };
        if old.get(crate::key::ID_FIELD).and_then(id_text).as_deref() == Some(id.as_str()) {
            return err;
        }
        match self.act(cx, &self.spec.operations.delete, &id).await {
            Ok(()) => IssuerError::InvalidResponse(format!(
                "{err}; keywheel deleted key {id}, which that create made"
            )),
            Err(delete_err) => IssuerError::KeyLeftBehind(format!(
                "{err}; key {id}, which that create made, could not be deleted: {delete_err}; delete it at the issuer by hand"
            )),
        }
    }

    /// Ids of the listed keys tagged with this run.
    async fn tagged_keys(&self, cx: &IssuerCx, tag: &str) -> Result<Vec<String>, IssuerError> {
        let items = self.list(cx).await?;
        Ok(items
            .iter()
            .filter(|item| item.pointer(tag).and_then(Value::as_str) == Some(cx.run_id.as_str()))
            .filter_map(|item| self.item_id(item))
            .collect())
    }

    async fn act(&self, cx: &IssuerCx, op: &Operation, key_id: &str) -> Result<(), IssuerError> {
        self.call(cx, op, &self.key_vars(cx, key_id), None, true)
            .await
            .map(drop)
    }
}

/// Whether `value`, or a string anywhere inside it, is one of the secret
/// values the targets hold.
fn holds_secret(value: &Value, current: &CurrentFields) -> bool {
    match value {
        Value::String(text) => current
            .iter()
            .filter(|(field, _)| field.as_str() != crate::key::ID_FIELD)
            .any(|(_, secret)| secret.expose() == text.as_bytes()),
        Value::Array(items) => items.iter().any(|item| holds_secret(item, current)),
        Value::Object(members) => members.values().any(|member| holds_secret(member, current)),
        _ => false,
    }
}

/// Returns an id as text: a JSON string, or a number written as text.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn state_of(snapshot: &IssuerSnapshot) -> Result<HttpState, IssuerError> {
    serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        IssuerError::InvalidResponse(format!(
            "http issuer: the journaled preflight state is invalid: {err}"
        ))
    })
}

#[async_trait]
impl Issuer for HttpIssuer {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn revocation(&self) -> Revocation {
        self.spec.revocation
    }

    async fn preflight(
        &self,
        cx: &IssuerCx,
        current: &CurrentFields,
    ) -> Result<IssuerSnapshot, IssuerError> {
        let (id, found_by, listed) = self.identify_old(cx, current).await?;
        let object = self.read_old(cx, &id, listed).await?;
        self.check_old_matches(&id, &object, current)?;

        let mut old = Map::new();
        old.insert(crate::key::ID_FIELD.into(), Value::String(id.clone()));
        let mut copied = Vec::new();
        for placeholder in self.spec.operations.create.placeholders() {
            let Some(member) = placeholder.members.first() else {
                continue;
            };
            if placeholder.root != Root::Old || old.contains_key(member) {
                continue;
            }
            if let Some(value) = object.get(member) {
                // These attributes are journaled in clear, so one that holds
                // a secret the targets hold (a `secret` the API returns on
                // read) must not be copied.
                if holds_secret(value, current) {
                    return Err(IssuerError::Misconfigured(format!(
                        "http issuer: the create operation copies old.{member}, which holds the secret of the key in use; keywheel keeps secrets out of its journal, so remove that placeholder"
                    )));
                }
                old.insert(member.clone(), value.clone());
                copied.push(member.clone());
            }
        }

        // Rendered now so that a missing attribute stops the run before
        // anything changes.
        self.request(&self.spec.operations.create, &self.create_vars(cx, &old))
            .map_err(|err| match err {
                IssuerError::Misconfigured(message) => IssuerError::Misconfigured(format!(
                    "{message}; the old key {id} lacks an attribute the create operation copies"
                )),
                other => other,
            })?;

        let summary = match copied.is_empty() {
            true => format!("old key {id} ({found_by})"),
            false => format!(
                "old key {id} ({found_by}); the new key copies {}",
                copied.join(", ")
            ),
        };
        let state = HttpState { old, found_by };
        Ok(IssuerSnapshot {
            state: serde_json::to_value(&state).unwrap_or_default(),
            old_key_id: Some(id),
            summary,
        })
    }

    async fn create(&self, cx: &IssuerCx, snapshot: &IssuerSnapshot) -> Result<Key, IssuerError> {
        let state = state_of(snapshot)?;
        self.send_create(cx, &state.old).await
    }

    async fn find_created(
        &self,
        cx: &IssuerCx,
        snapshot: &IssuerSnapshot,
    ) -> Result<Recovered, IssuerError> {
        let state = state_of(snapshot)?;
        let tagged = match &self.spec.run_tag {
            Some(tag) => Some(self.tagged_keys(cx, tag).await?),
            None => None,
        };
        if tagged.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Recovered::default());
        }
        if self.spec.idempotency_header.is_none() {
            return Ok(Recovered {
                key: None,
                orphan_ids: tagged.unwrap_or_default(),
            });
        }
        // The same idempotency key and body: the API replays the first
        // response. Without a tag list to say whether a key exists, this may
        // create the key now, which is what generate would do next anyway.
        match self.send_create(cx, &state.old).await {
            Ok(key) => Ok(Recovered {
                orphan_ids: tagged
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| *id != key.id)
                    .collect(),
                key: Some(key),
            }),
            Err(err) => match tagged {
                Some(orphan_ids) => {
                    tracing::warn!(error = %err, "replaying the create failed; deleting the tagged keys instead");
                    Ok(Recovered {
                        key: None,
                        orphan_ids,
                    })
                }
                None => Err(err),
            },
        }
    }

    async fn disable(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        match &self.spec.operations.disable {
            Some(op) => self.act(cx, op, key_id).await,
            None => Err(IssuerError::Unsupported(format!(
                "http issuer: the playbook describes no disable operation for key {key_id}"
            ))),
        }
    }

    async fn enable(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        match &self.spec.operations.enable {
            Some(op) => self.act(cx, op, key_id).await,
            None => Err(IssuerError::Unsupported(format!(
                "http issuer: the playbook describes no enable operation for key {key_id}"
            ))),
        }
    }

    async fn delete(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.act(cx, &self.spec.operations.delete, key_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_secret_finds_nested_values() {
        let mut current = CurrentFields::new();
        current.insert("secret".into(), SecretBytes::from_text("sk_live_abc"));
        current.insert(crate::key::ID_FIELD.into(), SecretBytes::from_text("key_1"));
        assert!(holds_secret(&serde_json::json!("sk_live_abc"), &current));
        assert!(holds_secret(
            &serde_json::json!({"a": ["x", "sk_live_abc"]}),
            &current
        ));
        assert!(
            !holds_secret(&serde_json::json!("key_1"), &current),
            "ids are public"
        );
        assert!(!holds_secret(&serde_json::json!(["models:read"]), &current));
    }
}
