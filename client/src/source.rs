//! Which endpoint to ask (D11): detected from the environment in azure-identity's order, or
//! given explicitly. The flavour is fixed when the client is made (it is part of every cache
//! key); URLs and secrets are read again each time a request is built, never on a hit.

use imds_cache::{Endpoint, Flavour};

use crate::Error;

/// Where tokens come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// Detect from the environment (D11).
    Auto,
    /// An endpoint given explicitly (the legacy VM extension is only ever chosen this way).
    Explicit(OwnedEndpoint),
}

/// An endpoint with owned strings; `url` is the token URL, or for IMDS the authority
/// (`http://host[:port]`, as `AZURE_POD_IDENTITY_AUTHORITY_HOST`).
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedEndpoint {
    /// The wire form.
    pub flavour: Flavour,
    /// Token URL (or IMDS authority).
    pub url: String,
    /// `IDENTITY_HEADER` / `MSI_SECRET`.
    pub secret: Option<String>,
    /// Azure ML's `DEFAULT_IDENTITY_CLIENT_ID`.
    pub default_client_id: Option<String>,
}

impl std::fmt::Debug for OwnedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedEndpoint")
            .field("flavour", &self.flavour)
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("default_client_id", &self.default_client_id)
            .finish()
    }
}

const IMDS_AUTHORITY: &str = "http://169.254.169.254";

impl OwnedEndpoint {
    /// The borrowed form the core writes requests for.
    pub fn endpoint(&self) -> Result<Endpoint<'_>, Error> {
        let mut e = if self.flavour == Flavour::Imds {
            Endpoint::imds_authority(&self.url)
        } else if self.flavour == Flavour::VmExtension && self.url.is_empty() {
            Ok(Endpoint::VM_EXTENSION)
        } else {
            Endpoint::from_url(self.flavour, &self.url)
        }
        .map_err(|e| Error::Endpoint(e.as_str()))?;
        e.secret = self.secret.as_deref();
        e.default_client_id = self.default_client_id.as_deref();
        if e.tls {
            return Err(Error::Unsupported(
                "HTTPS endpoints (Service Fabric's pinned-thumbprint TLS) are not built in",
            ));
        }
        Ok(e)
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// The flavour the environment selects (D11), read through `var`.
pub(crate) fn detect(var: &dyn Fn(&str) -> Option<String>) -> Result<Flavour, Error> {
    let has = |name: &str| non_empty(var(name)).is_some();
    Ok(if has("IDENTITY_ENDPOINT") && has("IDENTITY_HEADER") {
        if has("IDENTITY_SERVER_THUMBPRINT") {
            Flavour::ServiceFabric
        } else {
            Flavour::AppService2019
        }
    } else if has("IDENTITY_ENDPOINT") && has("IMDS_ENDPOINT") {
        Flavour::Arc
    } else if has("MSI_ENDPOINT") && has("MSI_SECRET") {
        Flavour::Msi2017
    } else if has("MSI_ENDPOINT") {
        Flavour::CloudShell
    } else if has("AZURE_FEDERATED_TOKEN_FILE") && has("AZURE_TENANT_ID") {
        // Never IMDS here: that would hand out the node's identity to the pod.
        return Err(Error::Unavailable(
            "AKS workload identity is configured: use a workload identity credential",
        ));
    } else {
        Flavour::Imds
    })
}

/// The endpoint of `flavour` as the environment gives it now.
pub(crate) fn from_env(
    flavour: Flavour,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<OwnedEndpoint, Error> {
    let get = |name: &str| non_empty(var(name));
    let need = |name: &'static str| get(name).ok_or(Error::Endpoint(name));
    let (url, secret, default_client_id) = match flavour {
        Flavour::Imds => (
            get("AZURE_POD_IDENTITY_AUTHORITY_HOST").unwrap_or_else(|| IMDS_AUTHORITY.into()),
            None,
            None,
        ),
        Flavour::AppService2019 | Flavour::ServiceFabric => (
            need("IDENTITY_ENDPOINT")?,
            Some(need("IDENTITY_HEADER")?),
            None,
        ),
        Flavour::Arc => (need("IDENTITY_ENDPOINT")?, None, None),
        Flavour::Msi2017 => (
            need("MSI_ENDPOINT")?,
            Some(need("MSI_SECRET")?),
            get("DEFAULT_IDENTITY_CLIENT_ID"),
        ),
        Flavour::CloudShell => (need("MSI_ENDPOINT")?, None, None),
        _ => (String::new(), None, None),
    };
    Ok(OwnedEndpoint {
        flavour,
        url,
        secret,
        default_client_id,
    })
}

/// The flavour the process environment selects now (D11): what [`Client::new`] would use.
///
/// [`Client::new`]: crate::Client::new
pub fn detect_flavour() -> Result<Flavour, Error> {
    detect(&process_env)
}

/// The endpoint the process environment names now (D11): its flavour, as [`detect_flavour`]
/// finds it, with the URL and secret of that flavour's variables. For callers that read the
/// environment once (the C sans-IO handle reads none).
pub fn detect_endpoint() -> Result<OwnedEndpoint, Error> {
    from_env(detect(&process_env)?, &process_env)
}

/// Reads the process environment.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    }

    #[test]
    fn detection_follows_azure_identity_order() {
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Vars<'_>, Result<Flavour, ()>)] = &[
            (&[], Ok(Flavour::Imds)),
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://x/msi"),
                    ("IDENTITY_HEADER", "h"),
                ],
                Ok(Flavour::AppService2019),
            ),
            (
                &[
                    ("IDENTITY_ENDPOINT", "https://x"),
                    ("IDENTITY_HEADER", "h"),
                    ("IDENTITY_SERVER_THUMBPRINT", "t"),
                ],
                Ok(Flavour::ServiceFabric),
            ),
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://x"),
                    ("IMDS_ENDPOINT", "http://y"),
                ],
                Ok(Flavour::Arc),
            ),
            (
                &[("MSI_ENDPOINT", "http://x"), ("MSI_SECRET", "s")],
                Ok(Flavour::Msi2017),
            ),
            (&[("MSI_ENDPOINT", "http://x")], Ok(Flavour::CloudShell)),
            // App Service 2019 wins over the 2017 variables (Container Apps sets both).
            (
                &[
                    ("IDENTITY_ENDPOINT", "http://x"),
                    ("IDENTITY_HEADER", "h"),
                    ("MSI_ENDPOINT", "http://x"),
                    ("MSI_SECRET", "s"),
                ],
                Ok(Flavour::AppService2019),
            ),
            (
                &[
                    ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
                    ("AZURE_TENANT_ID", "t"),
                ],
                Err(()),
            ),
            // Empty values count as unset.
            (
                &[("IDENTITY_ENDPOINT", ""), ("IDENTITY_HEADER", "h")],
                Ok(Flavour::Imds),
            ),
            (
                &[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:1")],
                Ok(Flavour::Imds),
            ),
        ];
        for (vars, want) in cases {
            assert_eq!(detect(&env(vars)).map_err(|_| ()), *want, "{vars:?}");
        }
    }

    #[test]
    fn endpoints_from_the_environment() {
        let e = from_env(Flavour::Imds, &env(&[])).unwrap();
        assert_eq!(e.endpoint().unwrap(), Endpoint::IMDS);
        let e = from_env(
            Flavour::Imds,
            &env(&[(
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                "http://127.0.0.1:8080/",
            )]),
        )
        .unwrap();
        assert_eq!(
            (e.endpoint().unwrap().host, e.endpoint().unwrap().port),
            ("127.0.0.1", 8080)
        );
        let vars = env(&[
            ("MSI_ENDPOINT", "http://localhost:7071/msi/token"),
            ("MSI_SECRET", "s"),
            ("DEFAULT_IDENTITY_CLIENT_ID", ""),
        ]);
        let e = from_env(Flavour::Msi2017, &vars).unwrap();
        assert_eq!(
            (e.secret.as_deref(), e.default_client_id.as_deref()),
            (Some("s"), None)
        );
        assert_eq!(
            from_env(
                Flavour::AppService2019,
                &env(&[("IDENTITY_ENDPOINT", "http://x")])
            ),
            Err(Error::Endpoint("IDENTITY_HEADER"))
        );
        let sf = from_env(
            Flavour::ServiceFabric,
            &env(&[
                ("IDENTITY_ENDPOINT", "https://localhost:2377/t"),
                ("IDENTITY_HEADER", "h"),
            ]),
        )
        .unwrap();
        assert!(matches!(sf.endpoint(), Err(Error::Unsupported(_))));
        assert!(!format!("{sf:?}").contains("\"h\""), "secret redacted");
    }
}
