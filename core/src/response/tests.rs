use super::error::ErrorBodyWire;
use super::token::{read_fields_slow, token_body};
use super::*;
use crate::http;
use crate::identity::{Flavour, Identity};
use crate::time::TimeError;
use std::string::String;

const NOW: u64 = 1_700_000_000;

fn token_of(body: &TokenBody<'_>) -> String {
    let mut buf = [0u8; 8192];
    let n = body.write_token(&mut buf).unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// (body, token, expires_on, refresh_in): every example body of the protocol reference §9.
#[test]
fn example_bodies() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, u64, Option<u64>)] = &[
        // E1, E2, E3, E4, E5 (no token_type), E11
        (r#"{"access_token":"<redacted>","client_id":"fe83865b-495e-4ec7-9574-12b264882c9f","expires_in":"86311","expires_on":"1643312761","ext_expires_in":"86399","not_before":"1643226061","resource":"https://management.azure.com","token_type":"Bearer"}"#, "<redacted>", 1643312761, None),
        (r#"{"access_token": "redacted", "client_id": "client-id", "expires_in": "86400", "expires_on": "1619561622", "ext_expires_in": "86399", "not_before": "1619474922", "resource": "https://management.azure.com", "token_type": "Bearer"}"#, "redacted", 1619561622, None),
        (r#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig","client_id":"ebdab26b-8a80-402c-821f-d5d203342fc2","expires_in":"86132","expires_on":"1765008628","ext_expires_in":"86399","not_before":"1764921928","resource":"https://management.azure.com/","token_type":"Bearer"}"#, "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig", 1765008628, None),
        (r#"{"access_token":"eyJ0eXAi...","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://management.azure.com/","token_type":"Bearer"}"#, "eyJ0eXAi...", 1506484173, None),
        (r#"{"access_token":"dummytoken","client_id":"be5947ed-3560-4afe-9504-59967a63f810","expires_in":"3599","expires_on":"1541705014","ext_expires_in":"262800","not_before":"1508961830","resource":"https://va"}"#, "dummytoken", 1541705014, None),
        // E12 App Service 2019, E13 date string (24 h), E14 doc sample `00:00:00 PM`
        (r#"{"access_token":"eyJ0eXAi…","expires_on":"1586984735","resource":"https://vault.azure.net","token_type":"Bearer","client_id":"5E29463D-71DA-4FE0-8E69-999B57DB23B0"}"#, "eyJ0eXAi…", 1586984735, None),
        (r#"{"access_token": "redacted", "expires_on": "05/22/2021 17:14:33 +00:00", "resource": "https://management.azure.com", "token_type": "Bearer", "client_id": "6d807b1c-2a6f-41a0-b428-d0e3a08382a0"}"#, "redacted", 1621703673, None),
        (r#"{"access_token":"eyJ0eXAi…","expires_on":"09/14/2017 00:00:00 PM +00:00","resource":"https://vault.azure.net","token_type":"Bearer"}"#, "eyJ0eXAi…", 1505390400, None),
        // E16 Arc (mixed string and number), E17 Service Fabric (number), E19 Azure ML
        (r#"{"token_type":"Bearer","expires_in":"85770","expires_on":"1700085770","ext_expires_in":86399,"access_token":"*","resource":"r"}"#, "*", 1700085770, None),
        (r#"{"token_type":"Bearer","access_token":"eyJ0eXAiO...","expires_on":1565244611,"resource":"https://vault.azure.net/"}"#, "eyJ0eXAiO...", 1565244611, None),
        (r#"{"access_token":"****","expires_in":3600,"expires_on":1700003600,"resource":"scope","token_type":"Bearer"}"#, "****", 1700003600, None),
        // expires_in only (Cloud Shell style), in both types; refresh_in honoured
        (r#"{"access_token":"t","expires_in":"3600"}"#, "t", NOW + 3600, None),
        (r#"{"expires_in":3600,"access_token":"t"}"#, "t", NOW + 3600, None),
        (r#"{"access_token":"t","expires_in":"7200","refresh_in":"1800"}"#, "t", NOW + 7200, Some(1800)),
        (r#"{"access_token":"t","expires_in":7200,"refresh_in":1800}"#, "t", NOW + 7200, Some(1800)),
        // RFC 3339 expires_on, token_type any case
        (r#"{"access_token":"t","expires_on":"2023-11-14T22:13:20Z","token_type":"bearer"}"#, "t", 1700000000, None),
        (r#"{"access_token":"t","expires_on":"2023-11-14 23:13:20+01:00","token_type":"BEARER"}"#, "t", 1700000000, None),
        // escapes decoded: \/ \uXXXX surrogate pairs \"
        (r#"{"access_token":"a\/b\u0041\ud83d\ude00\"c","expires_in":"60"}"#, "a/bA\u{1F600}\"c", NOW + 60, None),
        // unknown fields of every type skipped, including nested ones
        (r#"{"x":[1,{"y":[]}],"z":{"a":{"b":null}},"n":null,"b":true,"f":-1.5e3,"access_token":"t","expires_in":"1"}"#, "t", NOW + 1, None),
    ];
    for (body, token, expires_on_s, refresh_in_s) in cases {
        let parsed =
            parse_token_body(body.as_bytes(), NOW).unwrap_or_else(|e| panic!("{body}: {e:?}"));
        assert_eq!(token_of(&parsed), *token, "{body}");
        assert_eq!(parsed.token_len(), token.len(), "{body}");
        assert_eq!(parsed.expires_on_s, *expires_on_s, "{body}");
        assert_eq!(parsed.refresh_in_s, *refresh_in_s, "{body}");
    }
}

/// The parse as it was before the fast path (check, then serde-json-core's two
/// passes, then the token unescaped to be measured): the oracle.
fn two_pass(body: &[u8], request_at_s: u64) -> Result<TokenBody<'_>, BodyError> {
    crate::json::check(body, MAX_DEPTH).map_err(|_| BodyError::NotJson)?;
    token_body(read_fields_slow(body)?, request_at_s)
}

fn two_pass_error(body: &[u8]) -> ErrorBody<'_> {
    if crate::json::check(body, MAX_DEPTH).is_err() {
        return ErrorBody::default();
    }
    serde_json_core::de::from_slice::<ErrorBodyWire<'_>>(body)
        .map(|(w, _)| w.0)
        .unwrap_or_default()
}

/// Everything a caller can see of a parsed token body.
type Seen = (
    std::vec::Vec<u8>,
    std::vec::Vec<u8>,
    [u64; 2],
    Option<u64>,
    bool,
);

fn seen(body: &TokenBody<'_>) -> Seen {
    let mut written = std::vec![0; body.token_len()];
    assert_eq!(body.write_token(&mut written), Some(body.token_len()));
    let mut pieces = std::vec::Vec::new();
    body.pieces(|p| pieces.extend_from_slice(p));
    let id = Identity::client_id("fe83865b-495e-4ec7-9574-12b264882c9f").unwrap();
    let sizes = [body.token_len() as u64, body.expires_on_s];
    (
        written,
        pieces,
        sizes,
        body.refresh_in_s,
        body.client_id_matches(&id),
    )
}

#[test]
#[cfg_attr(miri, ignore = "reads the fuzz corpora")]
fn fast_path_answers_as_the_two_pass_parse() {
    let mut bodies = crate::json::tests::bodies();
    let token = "eyJ0eXAi.abc-_DEF.sig";
    let client = "fe83865b-495e-4ec7-9574-12b264882c9f";
    for shape in [
        std::format!(
            r#"{{"access_token":"{token}","client_id":"{client}","expires_in":"86399","expires_on":"1700086399","token_type":"Bearer"}}"#
        ),
        std::format!(
            r#"{{"access_token":"{token}","expires_on":1700086399,"expires_in":86399,"refresh_in":43200,"client_id":"{client}"}}"#
        ),
        std::format!(
            r#"{{"access_token":"{token}\u0041","expires_on":"1700086399","token_type":"bearer","client_id":"FE83865B-495E-4EC7-9574-12B264882C9F"}}"#
        ),
        std::format!(r#"{{"access_token":"{token}","expires_in":"1"}}"#),
        std::format!(r#"{{"access_token":"{token}","expires_on":18446744073709551616}}"#),
        std::format!(r#"{{"access_token":"{token}","expires_on":-1,"expires_in":1.5e1}}"#),
        std::format!(r#"{{"access_token":"{token}","expires_in":1,"refresh_in":null}}"#),
        std::format!(r#"{{"access_token":"{token}","expires_in":1,"refresh_in":[1]}}"#),
        String::from(r#"{"access_token":7,"expires_in":1}"#),
        String::from(r#"{"access\u005ftoken":"t","access_token":"u","expires_in":"1"}"#),
        String::from(r#"{"error":{"code":"c","message":"m"},"message":"n","error":"e"}"#),
        String::from(r#"{"error":"e","code":"c","error_description":"d","message":7}"#),
        String::from(r#"{"code":"c","error":"e","error":[1]}"#),
        String::from(r#""just a string""#),
    ] {
        bodies.push(shape.into_bytes());
    }
    // Objects of the fields both parses look at, with values of every shape.
    let keys = [
        "access_token",
        "token_type",
        "client_id",
        "expires_on",
        "expires_in",
        "refresh_in",
        "resource",
        "access\\u005ftoken",
        "error",
        "code",
        "message",
        "error_description",
    ];
    let values = [
        "\"eyJ0.eXAi_-.sig\"",
        "\"a\\/b\\u0041\\ud83d\\ude00\\\"c\"",
        "\"\"",
        "\"Bearer\"",
        "\"pop\"",
        "\"1700000000\"",
        "\"3600\"",
        "1700000000",
        "3600",
        "0",
        "-1",
        "1.5",
        "1e3",
        "18446744073709551615",
        "18446744073709551616",
        "null",
        "true",
        "[1]",
        "{\"code\":\"c\"}",
        "\"a\x7f\"",
        "\"\\ud83d\"",
        "\"a\\nb\"",
        "\"2023-11-14T22:13:20Z\"",
        "\"fe83865b-495e-4ec7-9574-12b264882c9f\"",
        "\"FE83865B-495E-4EC7-9574-12B264882C9F\"",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for _ in 0..20_000 {
        let mut body = String::from("{");
        let mut members = std::vec![("access_token", values[next(2)])];
        members.push((["expires_on", "expires_in"][next(2)], values[5 + next(4)]));
        for _ in 0..next(6) {
            members.push((keys[next(keys.len())], values[next(values.len())]));
        }
        let n = members.len();
        members.swap(0, next(n));
        for (i, (k, v)) in members.iter().enumerate() {
            let sep = if i == 0 { "" } else { [",", " , "][next(2)] };
            body.push_str(&std::format!("{sep}\"{k}\":{v}"));
        }
        body.push('}');
        bodies.push(body.into_bytes());
    }
    let mut tokens = 0;
    for body in &bodies {
        let fast = parse_token_body(body, NOW);
        let slow = two_pass(body, NOW);
        match (&fast, &slow) {
            (Ok(f), Ok(s)) => {
                tokens += 1;
                assert_eq!(seen(f), seen(s), "{body:?}");
            }
            _ => assert_eq!(fast.map(|_| ()), slow.map(|_| ()), "{body:?}"),
        }
        let (fast, slow) = (ErrorBody::parse(body), two_pass_error(body));
        assert_eq!(
            (fast.code, fast.message),
            (slow.code, slow.message),
            "{body:?}"
        );
        assert_eq!(fast.detail(), slow.detail(), "{body:?}");
    }
    assert!(tokens > 3000, "only {tokens} token bodies parsed");
}

#[test]
fn bad_bodies() {
    use BodyError as B;
    use TimeField::*;
    #[rustfmt::skip]
    let cases: &[(&str, BodyError)] = &[
        ("", B::NotJson),
        ("not json", B::NotJson),
        ("[]", B::NotJson),
        (r#"{"access_token":"t","expires_in":"1"} x"#, B::NotJson),
        (r#"{"access_token":"t","expires_in":"1""#, B::NotJson),
        (r#"{"access_token":"t","access_token":"u","expires_in":"1"}"#, B::NotJson),
        (r#"{"access_token":"t","expires_in":"1","expires_in":"2"}"#, B::NotJson),
        (r#"{"expires_in":"1"}"#, B::MissingToken),
        (r#"{"access_token":"","expires_in":"1"}"#, B::EmptyToken),
        (r#"{"access_token":"a\u000ab","expires_in":"1"}"#, B::BadToken),
        (r#"{"access_token":"a\qb","expires_in":"1"}"#, B::NotJson),
        (r#"{"access_token":"a\ud83db","expires_in":"1"}"#, B::BadToken),
        (r#"{"access_token":"a\ude00\ud83d","expires_in":"1"}"#, B::BadToken),
        (r#"{"access_token":"t"}"#, B::MissingExpiry),
        (r#"{"access_token":"t","expires_in":"3599.0"}"#, B::Time(ExpiresIn, TimeError::Fraction)),
        (r#"{"access_token":"t","expires_in":3599.0}"#, B::Time(ExpiresIn, TimeError::Fraction)),
        (r#"{"access_token":"t","expires_in":-1}"#, B::Time(ExpiresIn, TimeError::Negative)),
        (r#"{"access_token":"t","expires_in":"-1"}"#, B::Time(ExpiresIn, TimeError::Negative)),
        (r#"{"access_token":"t","expires_in":"abc"}"#, B::Time(ExpiresIn, TimeError::NotDigits)),
        (r#"{"access_token":"t","expires_in":null}"#, B::Time(ExpiresIn, TimeError::NotDigits)),
        (r#"{"access_token":"t","expires_on":"978307199"}"#, B::Time(ExpiresOn, TimeError::BeforeYear2001)),
        (r#"{"access_token":"t","expires_on":978307199}"#, B::Time(ExpiresOn, TimeError::BeforeYear2001)),
        (r#"{"access_token":"t","expires_on":"13/01/2021 00:00:00"}"#, B::Time(ExpiresOn, TimeError::BadDate)),
        (r#"{"access_token":"t","expires_in":"1","refresh_in":"x"}"#, B::Time(RefreshIn, TimeError::NotDigits)),
        (r#"{"access_token":"t","expires_in":"1","token_type":"pop"}"#, B::NotBearer),
        (r#"{"x":tru,"access_token":"t","expires_in":"1"}"#, B::NotJson),
        (r#"{"x":[1,],"access_token":"t","expires_in":"1"}"#, B::NotJson),
    ];
    for (body, want) in cases {
        assert_eq!(
            parse_token_body(body.as_bytes(), NOW).map(|_| ()),
            Err(*want),
            "{body}"
        );
    }
}

#[test]
#[cfg_attr(miri, ignore = "200 000 brackets: too slow under Miri")]
fn deep_nesting_is_refused_without_recursing() {
    let mut body = String::from(r#"{"access_token":"t","expires_in":"1","x":"#);
    body.extend(core::iter::repeat_n('[', 100_000));
    body.extend(core::iter::repeat_n(']', 100_000));
    body.push('}');
    assert_eq!(
        parse_token_body(body.as_bytes(), NOW).map(|_| ()),
        Err(BodyError::NotJson)
    );
    assert_eq!(
        ErrorBody::parse(body.as_bytes()).detail(),
        ErrorDetail::default()
    );
    let ok = r#"{"access_token":"t","expires_in":"1","x":[[[[{"a":[1]}]]]]}"#;
    assert!(parse_token_body(ok.as_bytes(), NOW).is_ok());
}

#[test]
fn write_token_refuses_short_buffers() {
    let body = parse_token_body(br#"{"access_token":"abcdef","expires_in":"9"}"#, NOW).unwrap();
    assert_eq!(body.write_token(&mut [0; 5]), None);
    assert_eq!(body.write_token(&mut [0; 6]), Some(6));
}

#[test]
fn debug_hides_the_token() {
    let body =
        parse_token_body(br#"{"access_token":"SECRETTOKEN","expires_in":"9"}"#, NOW).unwrap();
    let shown = std::format!("{body:?}");
    assert!(!shown.contains("SECRET"), "{shown}");
    assert!(shown.contains("token_len: 11"), "{shown}");
}

#[test]
fn client_id_echo() {
    let id = Identity::client_id("fe83865b-495e-4ec7-9574-12b264882c9f").unwrap();
    let cases: &[(&str, bool)] = &[
        (
            r#"{"access_token":"t","expires_in":"9","client_id":"fe83865b-495e-4ec7-9574-12b264882c9f"}"#,
            true,
        ),
        (
            r#"{"access_token":"t","expires_in":"9","client_id":"FE83865B-495E-4EC7-9574-12B264882C9F"}"#,
            true,
        ),
        (
            r#"{"access_token":"t","expires_in":"9","client_id":"00000000-495e-4ec7-9574-12b264882c9f"}"#,
            false,
        ),
        (
            r#"{"access_token":"t","expires_in":"9","client_id":"fe83865b-495e-4ec7-9574-12b264882c9"}"#,
            false,
        ),
        (
            r#"{"access_token":"t","expires_in":"9","client_id":"fe83865b-495e-4ec7-9574-12b264882c9fa"}"#,
            false,
        ),
        (r#"{"access_token":"t","expires_in":"9"}"#, true),
    ];
    for (body, want) in cases {
        let parsed = parse_token_body(body.as_bytes(), NOW).unwrap();
        assert_eq!(parsed.client_id_matches(&id), *want, "{body}");
        assert!(
            parsed.client_id_matches(&Identity::SYSTEM),
            "system is never checked"
        );
    }
}

/// (body, code, description): every error shape of §2, §4, §5 and §9.
#[test]
fn error_bodies() {
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"error":"invalid_request","error_description":"Required metadata header not specified"}"#, "invalid_request", "Required metadata header not specified"),
        (r#"{"error":"invalid_request","error_description":"Identity not found"}"#, "invalid_request", "Identity not found"),
        (r#"{"error":"invalid_resource","error_description":"AADSTS500011: x\r\nTrace ID: y","error_codes":[500011],"timestamp":"t","trace_id":"a","correlation_id":"b","error_uri":"https://e"}"#, "invalid_resource", "AADSTS500011: x\r\nTrace ID: y"),
        (r#"{"error":"connecting to 169.254.169.254:80: unreachable network."}"#, "connecting to 169.254.169.254:80: unreachable network.", ""),
        (r#"{"statusCode":500,"message":"An unexpected error occured while fetching the AAD Token.","correlationId":"4ce26535"}"#, "", "An unexpected error occured while fetching the AAD Token."),
        (r#"{"error":{"correlationId":"aaaa","code":"SecretHeaderNotFound","message":"Secret is not found in the request headers."}}"#, "SecretHeaderNotFound", "Secret is not found in the request headers."),
        (r#"{"error":{"code":"AudienceNotSupported","message":"Audience scope is not a supported MSI token audience."}}"#, "AudienceNotSupported", "Audience scope is not a supported MSI token audience."),
        (r#"{"error":"unauthorized_client","error_description":"Missing Basic Authorization header","error_codes":[401]}"#, "unauthorized_client", "Missing Basic Authorization header"),
        (r#"{"error":"x","error_description":"a\/b \u00e9"}"#, "x", "a/b é"),
        ("", "", ""),
        ("<html>502 Bad Gateway</html>", "", ""),
    ];
    for (body, code, description) in cases {
        let d = ErrorBody::parse(body.as_bytes()).detail();
        assert_eq!(
            (d.code.as_str(), d.description.as_str()),
            (*code, *description),
            "{body}"
        );
        assert!(!d.truncated);
    }
}

#[test]
fn long_descriptions_are_cut_and_flagged() {
    let mut body = String::from(r#"{"error":"e","error_description":""#);
    body.extend(core::iter::repeat_n('é', 400)); // 800 bytes
    body.push_str(r#""}"#);
    let d = ErrorBody::parse(body.as_bytes()).detail();
    assert!(d.truncated);
    assert_eq!(d.description.len(), MAX_DESCRIPTION_LEN);
    assert!(d.description.chars().all(|c| c == 'é'));
}

fn response<'a>(status: u16, body: &'a str, www: Option<&'static str>) -> http::Response<'a> {
    http::Response {
        status,
        retry_after: None,
        www_authenticate: www,
        body: body.as_bytes(),
    }
}

/// One line per D7 case: (flavour, status, body, expected kind or None for a token).
#[test]
fn d7_classes() {
    use FailureKind as K;
    use Flavour::*;
    let ok = r#"{"access_token":"t","expires_in":"3600"}"#;
    let err = r#"{"error":"e","error_description":"d"}"#;
    let realm = "Basic realm=/var/opt/azcmagent/tokens/a.key";
    let basic = Some(realm);
    #[rustfmt::skip]
    type Case<'a> = (Flavour, u16, &'a str, Option<&'static str>, Option<K>);
    let cases: &[Case<'_>] = &[
        (Imds, 200, ok, None, None),
        (Imds, 201, ok, None, None),
        (Imds, 200, "<html/>", None, Some(K::NotJson)),
        (
            Imds,
            200,
            r#"{"expires_in":"1"}"#,
            None,
            Some(K::MissingToken),
        ),
        (
            Imds,
            200,
            r#"{"access_token":"","expires_in":"1"}"#,
            None,
            Some(K::MissingToken),
        ),
        (
            Imds,
            200,
            r#"{"access_token":"t","expires_in":"1.5"}"#,
            None,
            Some(K::BadExpiry),
        ),
        (Imds, 400, err, None, Some(K::BadRequest)),
        (Imds, 401, err, None, Some(K::Unauthorized)),
        (Imds, 403, err, None, Some(K::Forbidden)),
        (Imds, 404, err, None, Some(K::NotFound)),
        (ServiceFabric, 404, err, None, Some(K::IdentityNotFound)),
        (Imds, 405, err, None, Some(K::MethodNotAllowed)),
        (Imds, 408, "", None, Some(K::RequestTimeout)),
        (Imds, 410, "", None, Some(K::Gone)),
        (Imds, 429, err, None, Some(K::TooManyRequests)),
        (Imds, 500, err, None, Some(K::ServerError)),
        (Imds, 503, "", None, Some(K::ServerError)),
        (Imds, 599, "", None, Some(K::ServerError)),
        (Imds, 302, "", None, Some(K::UnexpectedStatus)),
        (Imds, 418, "", None, Some(K::UnexpectedStatus)),
        (Arc, 401, err, None, Some(K::Unauthorized)),
        (Arc, 401, err, Some("Bearer realm=x"), Some(K::Unauthorized)),
        (Imds, 401, err, basic, Some(K::Unauthorized)),
    ];
    for (flavour, status, body, www, want) in cases {
        let r = response(*status, body, *www);
        let got = match classify(*flavour, &r, NOW, 16384) {
            Classified::Token(_) => None,
            Classified::Failure { failure, .. } => {
                assert_eq!(failure.status, *status);
                Some(failure.kind)
            }
            Classified::Challenge(_) => panic!("unexpected challenge for {status}"),
        };
        assert_eq!(got, *want, "{flavour:?} {status} {body}");
    }
    let arc = response(401, err, basic);
    assert!(matches!(classify(Arc, &arc, NOW, 16384), Classified::Challenge(c) if c == realm));
}

#[test]
fn classes_of_kinds() {
    assert_eq!(FailureKind::Gone.class(), OutcomeClass::Retry);
    assert_eq!(FailureKind::Truncated.class(), OutcomeClass::Retry);
    assert_eq!(
        FailureKind::IdentityNotFound.class(),
        OutcomeClass::Terminal
    );
    assert_eq!(FailureKind::TokenTooLarge.class(), OutcomeClass::Terminal);
    assert_eq!(FailureKind::Unavailable.class(), OutcomeClass::Unavailable);
}

#[test]
fn token_too_large_is_refused_not_cut() {
    // 9000 bytes against a limit of 8192; 900 against 819 under Miri (much slower there).
    let (len, limit) = if cfg!(miri) { (900, 819) } else { (9000, 8192) };
    let mut body = String::from(r#"{"access_token":""#);
    body.extend(core::iter::repeat_n('a', len));
    body.push_str(r#"","expires_in":"3600"}"#);
    let r = response(200, &body, None);
    assert!(matches!(
        classify(Flavour::Imds, &r, NOW, limit),
        Classified::Failure {
            failure: Failure {
                kind: FailureKind::TokenTooLarge,
                ..
            },
            ..
        }
    ));
    assert!(matches!(
        classify(Flavour::Imds, &r, NOW, len),
        Classified::Token(_)
    ));
}

/// The snake_case form of a CamelCase name (how the Python layer spelled codes before).
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn is_snake_case(code: &str) -> bool {
    !code.is_empty()
        && !code.starts_with('_')
        && !code.ends_with('_')
        && !code.contains("__")
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

#[test]
fn every_kind_is_listed_once_with_a_unique_snake_case_code() {
    use FailureKind::*;
    // Exhaustive: a new kind fails to compile here until it is given its place in `ALL`.
    let place = |k: FailureKind| match k {
        NotFound => 0,
        RequestTimeout => 1,
        TooManyRequests => 2,
        Gone => 3,
        ServerError => 4,
        ConnectTimeout => 5,
        ConnectionLost => 6,
        Truncated => 7,
        BadRequest => 8,
        Unauthorized => 9,
        Forbidden => 10,
        IdentityNotFound => 11,
        MethodNotAllowed => 12,
        UnexpectedStatus => 13,
        NotJson => 14,
        MissingToken => 15,
        TokenTooLarge => 16,
        ClientIdMismatch => 17,
        ExpiredOnArrival => 18,
        BadExpiry => 19,
        NotBearer => 20,
        MalformedResponse => 21,
        BadChallenge => 22,
        CacheFull => 23,
        Unavailable => 24,
        UnavailableTimeout => 25,
        UnavailableProxy => 26,
        UnavailableNotJson => 27,
    };
    assert_eq!(FailureKind::ALL.len(), 28);
    let mut codes = std::collections::BTreeSet::new();
    for (i, &k) in FailureKind::ALL.iter().enumerate() {
        assert_eq!(place(k), i, "{k:?} out of place in ALL");
        assert_eq!(FailureKind::from_u8(k as u8), Some(k));
        let code = k.code();
        assert!(is_snake_case(code), "{code}");
        assert_eq!(code, snake(&std::format!("{k:?}")), "{k:?}");
        assert!(codes.insert(code), "{code} used twice");
    }
    // Listed in the order of their numbers, which are never reused.
    assert!(FailureKind::ALL
        .windows(2)
        .all(|w| (w[0] as u8) < (w[1] as u8)));
    assert_eq!((0..=u8::MAX).filter_map(FailureKind::from_u8).count(), 28);
}

#[test]
fn first_contact_makes_the_no_identity_signs_unavailable() {
    use FailureKind::*;
    let docker = b"connecting to 169.254.169.254:80: connecting to 169.254.169.254:80: dial tcp \
        169.254.169.254:80: connectex: A socket operation was attempted to an Unreachable network.";
    assert_eq!(ConnectTimeout.at_first_contact(b""), UnavailableTimeout);
    assert_eq!(Forbidden.at_first_contact(docker), UnavailableProxy);
    assert_eq!(
        NotJson.at_first_contact(b"<html></html>"),
        UnavailableNotJson
    );
    // A 403 that is a real refusal stays terminal; other kinds keep theirs.
    assert_eq!(
        Forbidden.at_first_contact(b"{\"error\":\"forbidden\"}"),
        Forbidden
    );
    for kind in [ServerError, BadRequest, TooManyRequests, Gone, MissingToken] {
        assert_eq!(kind.at_first_contact(docker), kind);
    }
    for kind in [UnavailableTimeout, UnavailableProxy, UnavailableNotJson] {
        assert_eq!(kind.class(), OutcomeClass::Unavailable);
    }
}

#[test]
fn a_failure_shows_its_status_once() {
    let f = Failure {
        kind: FailureKind::BadRequest,
        status: 400,
    };
    let text = std::format!("{f}");
    assert_eq!(text.matches("400").count(), 1, "{text}");
    assert!(text.starts_with("HTTP 400 "), "{text}");
    assert_eq!(
        std::format!("{}", Failure::new(FailureKind::ConnectTimeout)),
        FailureKind::ConnectTimeout.as_str()
    );
}
