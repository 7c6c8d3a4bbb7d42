//! Which endpoint to ask (D11): detected from the environment in azure-identity's order, or
//! given explicitly. The flavour is fixed when the client is made (it is part of every cache
//! key); URLs and secrets are read again each time a request is built, never on a hit.

use std::path::Path;

use imds_cache::{Endpoint, Flavour, IMDS_TOKEN_PATH};

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
/// (`http://host[:port]`) or a token URL ending in `/metadata/identity/oauth2/token`.
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

/// Arc's token URL when the agent is found by its executable, not by the environment (as
/// MSAL Python, MSAL Go and the Rust SDK use it).
pub(crate) const ARC_DEFAULT_URL: &str = "http://localhost:40342/metadata/identity/oauth2/token";

/// Arc's agent executable, whose presence says Arc when no variable names an endpoint (MSAL's
/// probe).
#[cfg(windows)]
const ARC_AGENT: &str = r"C:\Program Files\AzureConnectedMachineAgent\himds.exe";
/// Arc's agent executable, whose presence says Arc when no variable names an endpoint (MSAL's
/// probe).
#[cfg(not(windows))]
const ARC_AGENT: &str = "/opt/azcmagent/bin/himds";

/// The variable that pins Service Fabric's certificate.
pub(crate) const THUMBPRINT_VAR: &str = "IDENTITY_SERVER_THUMBPRINT";

impl OwnedEndpoint {
    /// The borrowed form the core writes requests for.
    pub fn endpoint(&self) -> Result<Endpoint<'_>, Error> {
        let mut e = if self.flavour == Flavour::Imds && !self.url.ends_with(IMDS_TOKEN_PATH) {
            Endpoint::imds_authority(&self.url)
        } else if self.flavour == Flavour::VmExtension && self.url.is_empty() {
            Ok(Endpoint::VM_EXTENSION)
        } else {
            Endpoint::from_url(self.flavour, &self.url)
        }
        .map_err(|e| Error::Endpoint(e.as_str()))?;
        e.secret = self.secret.as_deref();
        e.default_client_id = self.default_client_id.as_deref();
        #[cfg(not(feature = "service-fabric-tls"))]
        if e.tls {
            return Err(Error::Unsupported(
                "HTTPS endpoints (Service Fabric's pinned-thumbprint TLS) are not built in: \
                 enable the service-fabric-tls feature",
            ));
        }
        Ok(e)
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// The flavour the environment selects (D11), read through `var`; `arc_agent_installed` says
/// whether Arc's agent is on this machine, which selects Arc when no variable names an endpoint.
pub(crate) fn detect(
    var: &dyn Fn(&str) -> Option<String>,
    arc_agent_installed: &dyn Fn() -> bool,
) -> Result<Flavour, Error> {
    let has = |name: &str| non_empty(var(name)).is_some();
    Ok(if has("IDENTITY_ENDPOINT") {
        if has("IDENTITY_HEADER") && has(THUMBPRINT_VAR) {
            Flavour::ServiceFabric
        } else if has("IDENTITY_HEADER") {
            Flavour::AppService2019
        } else if has("IMDS_ENDPOINT") {
            Flavour::Arc
        } else {
            // As azure-identity: an endpoint without its secret or Arc's second variable is
            // no managed identity (asking IMDS instead would ask another machine's).
            return Err(Error::Unavailable(
                "IDENTITY_ENDPOINT is set without IDENTITY_HEADER or IMDS_ENDPOINT",
            ));
        }
    } else if has("MSI_ENDPOINT") && has("MSI_SECRET") {
        Flavour::Msi2017
    } else if has("MSI_ENDPOINT") {
        Flavour::CloudShell
    } else if has("AZURE_FEDERATED_TOKEN_FILE") && has("AZURE_TENANT_ID") {
        // Never IMDS here: that would hand out the node's identity to the pod.
        return Err(Error::Unavailable(
            "AKS workload identity is configured: use a workload identity credential",
        ));
    } else if !has("AZURE_POD_IDENTITY_AUTHORITY_HOST") && arc_agent_installed() {
        Flavour::Arc
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
            imds_url(get("AZURE_POD_IDENTITY_AUTHORITY_HOST")),
            None,
            None,
        ),
        Flavour::AppService2019 | Flavour::ServiceFabric => (
            need("IDENTITY_ENDPOINT")?,
            Some(need("IDENTITY_HEADER")?),
            None,
        ),
        // Found by its executable: the agent's fixed address.
        Flavour::Arc => (
            get("IDENTITY_ENDPOINT").unwrap_or_else(|| ARC_DEFAULT_URL.into()),
            None,
            None,
        ),
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

/// IMDS's token URL from `AZURE_POD_IDENTITY_AUTHORITY_HOST` as azure-identity reads it:
/// the value with its `/`s stripped, then the token path appended (so a path in the value is
/// kept: `http://host:port/prefix` asks `…/prefix/metadata/identity/oauth2/token`).
fn imds_url(authority: Option<String>) -> String {
    let authority = authority.as_deref().unwrap_or(IMDS_AUTHORITY);
    format!("{}{IMDS_TOKEN_PATH}", authority.trim_matches('/'))
}

/// The thumbprint the environment pins Service Fabric's certificate to, read through `var`.
#[cfg(feature = "service-fabric-tls")]
pub(crate) fn thumbprint_from(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    non_empty(var(THUMBPRINT_VAR))
}

/// The flavour the process environment selects now (D11): what [`Client::new`] would use.
/// With no variable naming an endpoint, an Arc agent installed here (its `himds` executable)
/// selects Arc at `http://localhost:40342`, as MSAL does.
///
/// [`Client::new`]: crate::Client::new
pub fn detect_flavour() -> Result<Flavour, Error> {
    detect(&process_env, &|| Path::new(ARC_AGENT).exists())
}

/// The endpoint the process environment names now (D11): its flavour, as [`detect_flavour`]
/// finds it, with the URL and secret of that flavour's variables. For callers that read the
/// environment once (the C sans-IO handle reads none).
pub fn detect_endpoint() -> Result<OwnedEndpoint, Error> {
    from_env(detect_flavour()?, &process_env)
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
            assert_eq!(
                detect(&env(vars), &|| false).map_err(|_| ()),
                *want,
                "{vars:?}"
            );
        }
    }

    #[test]
    fn identity_endpoint_alone_is_unavailable_as_in_azure_identity() {
        let alone = env(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")]);
        let e = detect(&alone, &|| false).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(
            e.to_string().contains("IDENTITY_HEADER or IMDS_ENDPOINT"),
            "{e}"
        );
        // The thumbprint alone does not make it Service Fabric either.
        let with_thumbprint = env(&[
            ("IDENTITY_ENDPOINT", "https://127.0.0.1:1/t"),
            ("IDENTITY_SERVER_THUMBPRINT", "00"),
        ]);
        assert!(detect(&with_thumbprint, &|| false).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates files, which Miri's isolation forbids")]
    fn the_arc_agent_on_disk_selects_arc_at_its_default_address() {
        let dir = std::env::temp_dir().join(format!("imds-cache-himds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let agent = dir.join("himds");
        let absent = dir.join("not-there");
        std::fs::write(&agent, b"").unwrap();
        let installed = || agent.exists();
        assert_eq!(detect(&env(&[]), &installed), Ok(Flavour::Arc));
        assert_eq!(detect(&env(&[]), &|| absent.exists()), Ok(Flavour::Imds));
        let e = from_env(Flavour::Arc, &env(&[])).unwrap();
        assert_eq!(e.url, ARC_DEFAULT_URL);
        let arc = e.endpoint().unwrap();
        assert_eq!((arc.host, arc.port, arc.tls), ("localhost", 40342, false));
        // The variables still win: they name the endpoint.
        let vars = env(&[("MSI_ENDPOINT", "http://127.0.0.1:2/t")]);
        assert_eq!(detect(&vars, &installed), Ok(Flavour::CloudShell));
        let pod = env(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:3")]);
        assert_eq!(detect(&pod, &installed), Ok(Flavour::Imds));
        let workload = env(&[
            ("AZURE_FEDERATED_TOKEN_FILE", "/f"),
            ("AZURE_TENANT_ID", "t"),
        ]);
        assert!(
            detect(&workload, &installed).is_err(),
            "never the node's identity"
        );
        let arc_vars = env(&[
            (
                "IDENTITY_ENDPOINT",
                "http://127.0.0.1:4/metadata/identity/oauth2/token",
            ),
            ("IMDS_ENDPOINT", "http://127.0.0.1:4"),
        ]);
        assert_eq!(
            from_env(Flavour::Arc, &arc_vars).unwrap().url,
            "http://127.0.0.1:4/metadata/identity/oauth2/token"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pod_identity_host_with_a_path_keeps_it_as_azure_identity_does() {
        let cases = [
            ("http://127.0.0.1:8080", "/metadata/identity/oauth2/token"),
            ("http://127.0.0.1:8080/", "/metadata/identity/oauth2/token"),
            (
                "http://127.0.0.1:8080/nmi",
                "/nmi/metadata/identity/oauth2/token",
            ),
            (
                "http://127.0.0.1:8080/a/b/",
                "/a/b/metadata/identity/oauth2/token",
            ),
        ];
        for (value, path) in cases {
            let vars = env(&[("AZURE_POD_IDENTITY_AUTHORITY_HOST", value)]);
            let owned = from_env(Flavour::Imds, &vars).unwrap();
            let e = owned.endpoint().unwrap();
            assert_eq!(
                (e.host, e.port, e.path),
                ("127.0.0.1", 8080, path),
                "{value}"
            );
        }
        // An explicit IMDS authority keeps its rule: no path.
        let explicit = OwnedEndpoint {
            flavour: Flavour::Imds,
            url: "http://127.0.0.1:8080/nmi".into(),
            secret: None,
            default_client_id: None,
        };
        assert!(matches!(explicit.endpoint(), Err(Error::Endpoint(_))));
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
        if cfg!(feature = "service-fabric-tls") {
            assert!(sf.endpoint().unwrap().tls);
        } else {
            assert!(matches!(sf.endpoint(), Err(Error::Unsupported(_))));
        }
        assert!(!format!("{sf:?}").contains("\"h\""), "secret redacted");
        #[cfg(feature = "service-fabric-tls")]
        {
            let vars = env(&[("IDENTITY_SERVER_THUMBPRINT", "3E59")]);
            assert_eq!(thumbprint_from(&vars).as_deref(), Some("3E59"));
            assert_eq!(thumbprint_from(&env(&[])), None);
        }
    }
}
