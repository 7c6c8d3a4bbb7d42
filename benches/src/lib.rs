//! Shared pieces of the imds-cache benchmarks (see `BENCHMARKS.md` at the repository root):
//! real-shaped response bodies, warm caches driven with a fake clock, a warm driver against
//! the in-process emulator, and where results are written.
//!
//! Everything here is deterministic: bodies, tokens, keys and key sequences come from fixed
//! seeds, so two runs measure the same bytes.

#[cfg(feature = "azure")]
pub mod azure;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imds_cache::{
    layout_blocks, BufferStorage, Config, Done, Feed, Flavour, Identity, Key, Lookup, Resource,
    TokenCache, Word, BLOCK_SIZE,
};
use imds_cache_client::{Client, ClientConfig, OwnedEndpoint, SourceSpec};
use imds_emulator::{Emulator, Mode};

/// The fake clock's "now" (ms since the epoch) for core benches.
pub const T0: u64 = 1_700_000_000_000;
/// Length of the tokens of the cache benches (the issue's "1.9 KB token").
pub const TOKEN_LEN: usize = 1900;
/// The three resources of every identity.
pub const RESOURCES: [&str; 3] = [
    "https://management.azure.com",
    "https://vault.azure.net",
    "https://storage.azure.com",
];

/// A xorshift64 generator: the benches' only source of randomness, seeded.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`, uniform enough for picking keys.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// `len` indices drawn uniformly from `0..n`: the pre-generated key sequence of a bench.
/// `len` is a power of two so a bench can rotate through it with a mask.
pub fn key_sequence(n: usize, len: usize, seed: u64) -> Vec<u32> {
    assert!(len.is_power_of_two());
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.below(n) as u32).collect()
}

/// A JWT-shaped token of exactly `len` bytes: base64url header, payload and a 342-character
/// signature (RS256), joined by dots. No byte of it needs escaping in JSON.
pub fn jwt_like(len: usize, seed: u64) -> String {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert!(len >= 500, "a token shorter than its header and signature");
    let mut rng = Rng::new(seed);
    let header = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6IkwxS2ZLRklfam5YYndXYzIyeFp4dzFzVUhIMCIsImtpZCI6IkwxS2ZLRklfam5YYndXYzIyeFp4dzFzVUhIMCJ9";
    let signature_len = 342;
    let payload_len = len - header.len() - signature_len - 2;
    let mut t = String::with_capacity(len);
    t.push_str(header);
    t.push('.');
    for _ in 0..payload_len {
        t.push(B64[rng.below(64)] as char);
    }
    t.push('.');
    for _ in 0..signature_len {
        t.push(B64[rng.below(64)] as char);
    }
    debug_assert_eq!(t.len(), len);
    t
}

/// The client id (a GUID) of identity `i`.
pub fn client_id(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8000-00000000beef",
        i,
        i >> 16 & 0xffff,
        i & 0xfff
    )
}

/// An IMDS success body, fields in IMDS's order, all strings.
pub fn imds_body(token: &str, client_id: &str, resource: &str, now_secs: u64) -> String {
    format!(
        r#"{{"access_token":"{token}","client_id":"{client_id}","expires_in":"86399","expires_on":"{}","ext_expires_in":"86399","not_before":"{}","resource":"{resource}","token_type":"Bearer"}}"#,
        now_secs + 86_399,
        now_secs - 300
    )
}

/// An App Service (2019-08-01) success body, fields in App Service's order.
pub fn app_service_body(token: &str, client_id: &str, resource: &str, now_secs: u64) -> String {
    format!(
        r#"{{"access_token":"{token}","expires_on":"{}","resource":"{resource}","token_type":"Bearer","client_id":"{client_id}"}}"#,
        now_secs + 86_399
    )
}

/// An Entra ID error body as IMDS relays it (AADSTS500011), with AAD's extra fields and an
/// escaped claims challenge: about 1.75 KB, with `\"`, `\r\n` and `\u` escapes to undo.
pub fn error_body() -> String {
    let description = "AADSTS500011: The resource principal named https://contoso-prod-westeurope.vault.azure.net/keys/signing-key-2024/ was not found in the tenant named Contoso Production (72f988bf-86f1-41af-91ab-2d7cd011db47). This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant. See https://learn.microsoft.com/entra/identity-platform/reference-error-codes for the \\u0022resource\\u0022 parameter. If you are an administrator of this tenant, grant consent to the application (client app ID 0c1e6f9a-7b2d-4c3e-8f10-a1b2c3d4e5f6, display name contoso-billing-worker) for the requested scopes, or ask your administrator to review the enterprise application's permissions in the Entra admin center.\\r\\nTrace ID: 0b6e7c1a-3f2d-4e5b-9a8c-7d6e5f4a3b2c\\r\\nCorrelation ID: 5c4b3a29-1807-46f5-a4e3-d2c1b0a99887\\r\\nTimestamp: 2024-11-14 22:13:19Z";
    let claims = r#"{\"access_token\":{\"nbf\":{\"essential\":true,\"value\":\"1699999999\"},\"xms_caeerror\":{\"value\":\"10012\"},\"xms_rp_ipaddr\":{\"value\":\"20.61.112.34\"},\"acrs\":{\"essential\":true,\"values\":[\"c1\",\"c25\"]}}}"#;
    format!(
        r#"{{"error":"invalid_resource","error_description":"{description}","error_codes":[500011,50076],"timestamp":"2024-11-14 22:13:19Z","trace_id":"0b6e7c1a-3f2d-4e5b-9a8c-7d6e5f4a3b2c","correlation_id":"5c4b3a29-1807-46f5-a4e3-d2c1b0a99887","error_uri":"https://login.microsoftonline.com/error?code=500011","suberror":"consent_required","claims":"{claims}","tenant_region_scope":"EU","tenant_region_sub_scope":"","cloud_instance_name":"microsoftonline.com","msgraph_host":"graph.microsoft.com","tenant_id":"72f988bf-86f1-41af-91ab-2d7cd011db47","request_id":"5c4b3a29-1807-46f5-a4e3-d2c1b0a99887"}}"#
    )
}

/// What a body sample is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// A success body with a token.
    Token,
    /// An error body.
    Error,
}

/// One body of the parse bench.
#[derive(Clone, Debug)]
pub struct BodySample {
    /// The bench's name for it.
    pub name: &'static str,
    /// Token or error.
    pub kind: BodyKind,
    /// The flavour whose endpoint sends it.
    pub flavour: Flavour,
    /// The HTTP status it comes with.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
    /// The token inside, if any.
    pub token: Option<String>,
}

impl BodySample {
    /// The whole HTTP response (IMDS's headers, `Content-Length` framing).
    pub fn http(&self) -> Vec<u8> {
        http_response(self.status, &self.body)
    }
}

/// The request time (epoch seconds) of the parse samples.
pub const SAMPLE_NOW_SECS: u64 = T0 / 1000;

/// The parse bench's bodies: IMDS (1.9 KB), App Service (1.8 KB), error (1.7 KB) and IMDS
/// with a 6 KB token.
pub fn body_samples() -> Vec<BodySample> {
    let id = client_id(7);
    let now_ms = SAMPLE_NOW_SECS;
    let t = jwt_like(1_580, 1);
    let big = jwt_like(6_144, 2);
    let imds = imds_body(&t, &id, RESOURCES[0], now_ms);
    let app = app_service_body(&t, &id, RESOURCES[1], now_ms);
    let imds6k = imds_body(&big, &id, RESOURCES[2], now_ms);
    let sample = |name, kind, flavour, status, body: String, token: Option<&String>| BodySample {
        name,
        kind,
        flavour,
        status,
        body: body.into_bytes(),
        token: token.cloned(),
    };
    vec![
        sample("imds", BodyKind::Token, Flavour::Imds, 200, imds, Some(&t)),
        sample(
            "app_service",
            BodyKind::Token,
            Flavour::AppService2019,
            200,
            app,
            Some(&t),
        ),
        sample(
            "error",
            BodyKind::Error,
            Flavour::Imds,
            400,
            error_body(),
            None,
        ),
        sample(
            "imds_6k_token",
            BodyKind::Token,
            Flavour::Imds,
            200,
            imds6k,
            Some(&big),
        ),
    ]
}

/// An HTTP/1.1 response with IMDS's headers around `body`.
pub fn http_response(status: u16, body: &[u8]) -> Vec<u8> {
    let reason = if status == 200 { "OK" } else { "Bad Request" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nServer: IMDS/150.870.65.1015\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The owning cache type of the benches (the driver's shape).
pub type OwnedCache = TokenCache<BufferStorage<std::sync::Arc<[Word]>>>;

/// Arena blocks one entry of `key_len + token_len` bytes takes.
pub fn blocks_per_entry(key_len: usize, token_len: usize) -> usize {
    (key_len + token_len).div_ceil(BLOCK_SIZE)
}

/// Bytes of the table's words for a cache of `slots` entries and `blocks` blocks.
pub fn storage_bytes(slots: usize, blocks: usize) -> usize {
    layout_blocks(slots, blocks, BLOCK_SIZE)
        .expect("a valid layout")
        .total_bytes
}

/// A cache filled with `entries` tokens of `token_len` bytes, and what it holds.
pub struct WarmCache {
    /// The cache, sized to hold exactly `entries` (slots) and their bytes (blocks).
    pub cache: OwnedCache,
    /// Client ids, one per identity (`entries / 3` rounded up).
    pub ids: Vec<String>,
    /// The token of entry `i` (identity `i / 3`, resource `i % 3`).
    pub tokens: Vec<Vec<u8>>,
    /// Slots of the storage.
    pub slots: usize,
    /// Arena blocks of the storage.
    pub blocks: usize,
}

impl WarmCache {
    /// Fills a new cache with `entries` keys (identity `i / 3`, resource `i % 3`), each with
    /// its own token, through the real path: lookup → ticket → feed of an IMDS response.
    /// Entry `i` is fetched at [`fill_time`](Self::fill_time)`(i)`, 10 ms apart, so that the
    /// request budget (raised to 128 per second) never throttles the fill; hits are then
    /// looked up at [`hit_time`](Self::hit_time).
    pub fn new(entries: usize, token_len: usize) -> Self {
        let ids: Vec<String> = (0..entries.div_ceil(3)).map(client_id).collect();
        let longest_key = 4 + ids[0].len() + RESOURCES.iter().map(|r| r.len()).max().unwrap_or(0);
        let blocks = entries * blocks_per_entry(longest_key, token_len);
        let mut config = Config::DEFAULT;
        config.rate = 128;
        let layout = layout_blocks(entries, blocks, BLOCK_SIZE).expect("a valid layout");
        let words: std::sync::Arc<[Word]> = (0..layout.words).map(|_| Word::new(0)).collect();
        let mut cache = TokenCache::with_words(config, layout, words).expect("cache storage");
        let mut tokens = Vec::with_capacity(entries);
        let mut scratch = vec![0u8; 64];
        for i in 0..entries {
            let token = jwt_like(token_len, i as u64 + 100);
            let id = &ids[i / 3];
            let key = key_of(id, RESOURCES[i % 3]);
            let now_ms = Self::fill_time(i);
            let ticket = match cache.lookup(&key, now_ms, &mut scratch).expect("lookup") {
                Lookup::Fetch(ticket) => ticket,
                other => panic!("entry {i}: expected a fetch, got {other:?}"),
            };
            let body = imds_body(&token, id, RESOURCES[i % 3], T0 / 1000);
            let mut response = http_response(200, body.as_bytes());
            match cache.feed(ticket, &mut response, now_ms).expect("feed") {
                Feed::Done(Done::Token { len, .. }) => assert_eq!(len, token_len),
                other => panic!("entry {i}: {other:?}"),
            }
            tokens.push(token.into_bytes());
        }
        assert_eq!(cache.len(), entries);
        Self {
            cache,
            ids,
            tokens,
            slots: entries,
            blocks,
        }
    }

    /// When entry `i` is fetched (ms).
    pub fn fill_time(i: usize) -> u64 {
        T0 + 10 * i as u64
    }

    /// When the benches look the entries up (ms): after the fill, long before any refresh.
    pub fn hit_time(&self) -> u64 {
        Self::fill_time(self.tokens.len()) + 1
    }

    /// The key of entry `i`.
    pub fn key(&self, i: usize) -> Key<'_> {
        key_of(&self.ids[i / 3], RESOURCES[i % 3])
    }

    /// Every key, in entry order.
    pub fn keys(&self) -> Vec<Key<'_>> {
        (0..self.tokens.len()).map(|i| self.key(i)).collect()
    }
}

/// The IMDS key of a user-assigned identity (by client id) and a resource.
pub fn key_of<'a>(client_id: &'a str, resource: &'a str) -> Key<'a> {
    Key {
        flavour: Flavour::Imds,
        identity: Identity::client_id(client_id).expect("a GUID"),
        resource: Resource::new(resource).expect("a resource"),
    }
}

/// The in-process emulator (IMDS mode, throttling off, `token_len`-byte tokens) and a client
/// pointed at it whose `identities × 3` keys are all warm.
pub fn warm_driver(identities: usize, token_len: usize) -> (Emulator, Client, Vec<String>) {
    warm_driver_in(identities, token_len, None)
}

/// [`warm_driver`], with the client's table in the host's files in `share_dir` when given
/// (`Share::Host`), else its own.
pub fn warm_driver_in(
    identities: usize,
    token_len: usize,
    share_dir: Option<&std::path::Path>,
) -> (Emulator, Client, Vec<String>) {
    let mut config = imds_emulator::Config::new(Mode::Imds);
    config.identities = identities;
    config.token_size = token_len;
    config.throttle = false;
    let emulator = Emulator::start(config).expect("emulator starts");
    let mut cache = Config::DEFAULT;
    cache.rate = 128;
    cache.rate_window_ms = 100;
    cache.in_flight = 16;
    let client = Client::with_config(ClientConfig {
        cache,
        source: SourceSpec::Explicit(OwnedEndpoint {
            flavour: Flavour::Imds,
            url: emulator.url(),
            secret: None,
            default_client_id: None,
        }),
        share: match share_dir {
            Some(_) => imds_cache_client::Share::Host,
            None => imds_cache_client::Share::Process,
        },
        share_dir: share_dir.map(|d| d.to_path_buf()),
        ..ClientConfig::default()
    })
    .expect("client");
    let ids: Vec<String> = emulator
        .identities()
        .iter()
        .skip(1)
        .map(|i| i.client_id.clone())
        .collect();
    let identities: Vec<Identity<'_>> = ids
        .iter()
        .map(|id| Identity::client_id(id).expect("a GUID"))
        .collect();
    let resources: Vec<Resource<'_>> = RESOURCES
        .iter()
        .map(|r| Resource::new(r).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (report, errors) = client.prefetch(&identities, &resources, deadline, |_| {});
    assert!(errors.is_empty(), "warm-up failed: {:?}", errors.first());
    assert_eq!(report.ok, ids.len() * RESOURCES.len());
    (emulator, client, ids)
}

/// The workspace's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// The workspace root (the folder above this package).
pub fn workspace_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where the non-criterion parts write their results (`target/bench/NAME.json`), for the
/// table of `bench_table`.
pub fn result_path(name: &str) -> PathBuf {
    target_dir().join("bench").join(format!("{name}.json"))
}

/// Writes `value` to [`result_path`]`(name)`.
pub fn write_result(name: &str, value: &serde_json::Value) -> std::io::Result<PathBuf> {
    let path = result_path(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_vec_pretty(value)?)?;
    Ok(path)
}
