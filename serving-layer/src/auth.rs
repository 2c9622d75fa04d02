//! Authentication: the Flight handshake turns Basic credentials into a bearer token, or a
//! configured static token is sent as `Authorization: Bearer <token>` with every call.
//!
//! Every call, the handshake included, passes [`Interceptor`] before it reaches the Flight
//! SQL service: a method cannot forget to check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::prelude::{BASE64_STANDARD, BASE64_STANDARD_NO_PAD};
use rand::RngCore as _;
use strata_core::config::AuthConfig;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// Who may call, and the tokens handed out.
#[derive(Debug)]
pub struct Authenticator {
    static_token: Option<String>,
    users: Vec<(String, String)>,
    ttl: Duration,
    issued: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        Authenticator {
            static_token: config.token.clone(),
            users: config
                .users
                .iter()
                .filter_map(|u| u.password.clone().map(|p| (u.username.clone(), p)))
                .collect(),
            ttl: config.token_ttl,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any credential is required.
    pub fn enabled(&self) -> bool {
        self.static_token.is_some() || !self.users.is_empty()
    }

    /// Checks the `authorization` header of a call.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let header = header(metadata)?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let token = token.trim();
            if let Some(expected) = &self.static_token
                && constant_time_eq(token.as_bytes(), expected.as_bytes())
            {
                return Ok(());
            }
            let mut issued = self.issued.lock().expect("token lock");
            let now = Instant::now();
            issued.retain(|_, expiry| *expiry > now);
            if issued.contains_key(token) {
                return Ok(());
            }
            return Err(Status::unauthenticated(
                "invalid or expired bearer token: log in again (Flight handshake)",
            ));
        }
        if header.starts_with("Basic ") {
            self.basic(header)?;
            return Ok(());
        }
        Err(Status::unauthenticated(
            "unsupported authorization header: use Basic (handshake) or Bearer",
        ))
    }

    /// The handshake: Basic credentials in, a bearer token out.
    pub fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        if !self.enabled() {
            // No auth configured: hand out a token anyway, clients expect one.
            return Ok(self.issue());
        }
        let header = header(metadata)?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            self.check(metadata)?;
            return Ok(token.trim().to_string());
        }
        self.basic(header)?;
        Ok(self.issue())
    }

    fn basic(&self, header: &str) -> Result<(), Status> {
        let encoded = header
            .strip_prefix("Basic ")
            .ok_or_else(|| Status::unauthenticated("expected Basic credentials for the handshake"))?;
        // Some clients (ADBC's Go driver) send base64 without padding.
        let encoded = encoded.trim();
        let decoded = BASE64_STANDARD
            .decode(encoded)
            .or_else(|_| BASE64_STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| Status::invalid_argument("Basic credentials are not valid base64"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| Status::invalid_argument("Basic credentials are not UTF-8"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("Basic credentials must be user:password"))?;
        let ok = self
            .users
            .iter()
            .any(|(u, p)| u == user && constant_time_eq(password.as_bytes(), p.as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid user name or password"))
        }
    }

    fn issue(&self) -> String {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.issued
            .lock()
            .expect("token lock")
            .insert(token.clone(), Instant::now() + self.ttl);
        token
    }
}

/// The tonic interceptor in front of the Flight SQL service: a call without valid
/// credentials is refused before the service sees it.
#[derive(Debug, Clone)]
pub struct Interceptor(pub Arc<Authenticator>);

impl tonic::service::Interceptor for Interceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.0.check(request.metadata())?;
        Ok(request)
    }
}

fn header(metadata: &MetadataMap) -> Result<&str, Status> {
    metadata
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated("authentication required: log in with the Flight handshake or send a bearer token")
        })?
        .to_str()
        .map_err(|_| Status::invalid_argument("the authorization header is not ASCII"))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use strata_core::config::UserConfig;
    use tonic::Code;

    use super::*;

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn tokens_and_passwords() {
        let auth = Authenticator::new(&AuthConfig {
            token: Some("s3cret".into()),
            users: vec![UserConfig {
                username: "ana".into(),
                password: Some("pw".into()),
                password_env: None,
            }],
            token_ttl: Duration::from_secs(60),
        });
        assert!(auth.check(&with_header("Bearer s3cret")).is_ok());
        assert_eq!(
            auth.check(&with_header("Bearer nope")).unwrap_err().code(),
            Code::Unauthenticated
        );
        assert_eq!(
            auth.check(&MetadataMap::new()).unwrap_err().code(),
            Code::Unauthenticated
        );
        let basic = format!("Basic {}", BASE64_STANDARD.encode("ana:pw"));
        let token = auth.handshake(&with_header(&basic)).unwrap();
        assert!(auth.check(&with_header(&format!("Bearer {token}"))).is_ok());
        let unpadded = format!("Basic {}", BASE64_STANDARD_NO_PAD.encode("ana:pw"));
        assert!(auth.handshake(&with_header(&unpadded)).is_ok());
        let wrong = format!("Basic {}", BASE64_STANDARD.encode("ana:nope"));
        assert_eq!(
            auth.handshake(&with_header(&wrong)).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn the_interceptor_refuses_a_call_without_credentials() {
        use tonic::service::Interceptor as _;
        let auth = Arc::new(Authenticator::new(&AuthConfig {
            token: Some("s3cret".into()),
            ..AuthConfig::default()
        }));
        let mut interceptor = Interceptor(auth);
        let refused = interceptor.call(Request::new(())).unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        let mut request = Request::new(());
        *request.metadata_mut() = with_header("Bearer s3cret");
        assert!(interceptor.call(request).is_ok());
        let mut open = Interceptor(Arc::new(Authenticator::new(&AuthConfig::default())));
        assert!(open.call(Request::new(())).is_ok());
    }

    #[test]
    fn no_auth_configured_lets_everyone_in() {
        let auth = Authenticator::new(&AuthConfig::default());
        assert!(!auth.enabled());
        assert!(auth.check(&MetadataMap::new()).is_ok());
    }
}
