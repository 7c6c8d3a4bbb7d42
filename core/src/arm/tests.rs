use super::*;
use crate::identity::IdentityKind;
use std::{format, string::String, vec, vec::Vec};

const CID: &str = "fe83865b-495e-4ec7-9574-12b264882c9f";
const PID: &str = "5e29463d-71da-4fe0-8e69-999b57db23b0";
const R1: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a";
const R2: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b";
const R3: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/c";

/// Parses with generous buffers; answers (system, [(resource id, client, principal)]).
type Owned = (bool, Vec<(String, Option<String>, Option<String>)>);

fn parse_n(json: &str, n: usize) -> Result<Owned, ArmError> {
    let mut scratch = vec![0u8; json.len()];
    let mut out = vec![UserAssigned::EMPTY; n];
    let got = parse_arm_identity(json.as_bytes(), &mut scratch, &mut out)?;
    let list = out[..got.user_assigned]
        .iter()
        .map(|u| {
            (
                u.resource_id.into(),
                u.client_id.map(String::from),
                u.principal_id.map(String::from),
            )
        })
        .collect();
    Ok((got.system, list))
}

fn parse(json: &str) -> Result<Owned, ArmError> {
    parse_n(json, 8)
}

/// (system, resource ids) or the error.
type Ids = Result<(bool, Vec<String>), ArmError>;
/// (system, user-assigned allowed).
type Flags = (bool, bool);

fn ids(json: &str) -> Ids {
    parse(json).map(|(s, l)| (s, l.into_iter().map(|e| e.0).collect()))
}

#[test]
fn dictionary_form_from_the_protocol_reference() {
    // §7 verbatim: its placeholders are not GUIDs, and the first one checked is refused.
    let verbatim = r#"{
    "type": "SystemAssigned, UserAssigned",
    "principalId": "<guid, read-only, system identity>",
    "tenantId": "<guid, read-only>",
    "userAssignedIdentities": {
      "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>": {
        "principalId": "<guid, read-only>",
        "clientId": "<guid, read-only>"
      }
    }
  }"#;
    assert_eq!(
        parse(verbatim),
        Err(ArmError::InvalidClientId(IdentityError::ControlCharacter))
    );
    let filled = verbatim
        .replace("<guid, read-only, system identity>", PID)
        .replace(
            "<guid, read-only>\",\n        \"clientId\": \"<guid, read-only>",
            &format!("{PID}\",\n        \"clientId\": \"{CID}"),
        )
        .replace("<guid, read-only>", "72f988bf-86f1-41af-91ab-2d7cd011db47")
        .replace("<sub>", "0000")
        .replace("<rg>", "rg")
        .replace("<name>", "id1");
    let rid = "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1";
    assert_eq!(
        parse(&filled),
        Ok((true, vec![(rid.into(), Some(CID.into()), Some(PID.into()))]))
    );
    // Request form: the values are `{}`.
    let request = format!(
        r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{}},"{R2}":{{}}}}}}"#
    );
    assert_eq!(ids(&request), Ok((false, vec![R1.into(), R2.into()])));
}

#[test]
fn array_form() {
    let old =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/identities/old";
    let json = format!(
        r#"{{"type": "SystemAssigned, UserAssigned", "identityIds": ["{old}", "{R1}"], "principalId": "{PID}", "tenantId": "{PID}"}}"#
    );
    assert_eq!(ids(&json), Ok((true, vec![old.into(), R1.into()])));
    assert_eq!(
        ids(r#"{"type":"UserAssigned","identityIds":[]}"#),
        Ok((false, vec![]))
    );
    assert_eq!(
        ids(r#"{"type":"UserAssigned","identityIds":null}"#),
        Ok((false, vec![]))
    );
    // Both forms: the union, in order.
    let both = format!(
        r#"{{"type":"UserAssigned","identityIds":["{R1}"],"userAssignedIdentities":{{"{R2}":{{}}}}}}"#
    );
    assert_eq!(ids(&both), Ok((false, vec![R1.into(), R2.into()])));
    let dup = format!(
        r#"{{"type":"UserAssigned","identityIds":["{R1}"],"userAssignedIdentities":{{"{R1}":{{}}}}}}"#
    );
    assert_eq!(ids(&dup), Err(ArmError::DuplicateIdentity));
    let dup = format!(
        r#"{{"type":"UserAssigned","identityIds":["{R1}","{}"]}}"#,
        R1.to_uppercase()
    );
    assert_eq!(ids(&dup), Err(ArmError::DuplicateIdentity));
}

#[test]
fn type_spellings() {
    // (type, system, user-assigned allowed)
    #[rustfmt::skip]
    let cases: &[(&str, Result<Flags, ArmError>)] = &[
        ("None", Ok((false, false))),
        ("none", Ok((false, false))),
        ("SystemAssigned", Ok((true, false))),
        ("systemassigned", Ok((true, false))),
        ("UserAssigned", Ok((false, true))),
        ("userAssigned", Ok((false, true))),
        ("USERASSIGNED", Ok((false, true))),
        ("SystemAssigned, UserAssigned", Ok((true, true))),
        ("SystemAssigned,UserAssigned", Ok((true, true))),
        ("systemAssigned ,  userassigned", Ok((true, true))),
        ("System\\u0041ssigned", Ok((true, false))),
        ("", Err(ArmError::UnknownType)),
        (" None", Err(ArmError::UnknownType)),
        ("None ", Err(ArmError::UnknownType)),
        ("UserAssigned, SystemAssigned", Err(ArmError::UnknownType)),
        ("SystemAssigned,", Err(ArmError::UnknownType)),
        ("SystemAssigned, UserAssigned, None", Err(ArmError::UnknownType)),
        ("SystemAssigned;UserAssigned", Err(ArmError::UnknownType)),
        ("Both", Err(ArmError::UnknownType)),
        ("SystemAssigned\\u0000", Err(ArmError::UnknownType)),
        ("SystemAssigned,\\tUserAssigned", Err(ArmError::UnknownType)),
        ("\\x", Err(ArmError::Malformed)),
    ];
    for (ty, want) in cases {
        let plain = format!(r#"{{"type":"{ty}"}}"#);
        let with_user = format!(r#"{{"type":"{ty}","userAssignedIdentities":{{"{R1}":{{}}}}}}"#);
        match want {
            Ok((system, user)) => {
                assert_eq!(ids(&plain), Ok((*system, vec![])), "{ty:?}");
                let want_user = if *user {
                    Ok((*system, vec![String::from(R1)]))
                } else {
                    Err(ArmError::UserAssignedNotInType)
                };
                assert_eq!(ids(&with_user), want_user, "{ty:?}");
            }
            Err(e) => {
                assert_eq!(ids(&plain), Err(*e), "{ty:?}");
                assert_eq!(ids(&with_user), Err(*e), "{ty:?}");
            }
        }
    }
    let long = format!(r#"{{"type":"{}"}}"#, "x".repeat(100));
    assert_eq!(ids(&long), Err(ArmError::UnknownType));
}

#[test]
fn null_values_remove() {
    #[rustfmt::skip]
    let cases: &[(String, Ids)] = &[
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null,"{R2}":{{}}}}}}"#), Ok((false, vec![R2.into()]))),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null}}}}"#), Ok((false, vec![]))),
        (format!(r#"{{"type":"None","userAssignedIdentities":{{"{R1}":null}}}}"#), Ok((false, vec![]))),
        (format!(r#"{{"type":"SystemAssigned","userAssignedIdentities":{{"{R1}":null}}}}"#), Ok((true, vec![]))),
        (String::from(r#"{"type":"UserAssigned","userAssignedIdentities":null}"#), Ok((false, vec![]))),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{}},"{R1}":null}}}}"#), Err(ArmError::DuplicateIdentity)),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null,"{R2}":{{}},"{}":{{}}}}}}"#, R1.to_uppercase()), Err(ArmError::DuplicateIdentity)),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":null,"{R1}":null,"{R2}":{{}}}}}}"#), Ok((false, vec![R2.into()]))),
        (String::from(r#"{"type":"UserAssigned","userAssignedIdentities":{"/bad":null}}"#), Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":null,"principalId":null}}}}}}"#), Ok((false, vec![R1.into()]))),
    ];
    for (json, want) in cases {
        assert_eq!(ids(json), *want, "{json}");
    }
    // A removal written with escapes still matches the granted id.
    let esc = R1.replace('/', "\\/");
    let json = format!(
        r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{esc}":null,"{R1}":{{}}}}}}"#
    );
    assert_eq!(ids(&json), Err(ArmError::DuplicateIdentity));
}

#[test]
fn user_assigned_type_and_list_disagree() {
    #[rustfmt::skip]
    let cases: &[(String, Ids)] = &[
        (String::from(r#"{"type":"UserAssigned"}"#), Ok((false, vec![]))),
        (String::from(r#"{"type":"SystemAssigned, UserAssigned","userAssignedIdentities":{}}"#), Ok((true, vec![]))),
        (format!(r#"{{"type":"SystemAssigned","userAssignedIdentities":{{"{R1}":{{}}}}}}"#), Err(ArmError::UserAssignedNotInType)),
        (format!(r#"{{"type":"None","identityIds":["{R1}"]}}"#), Err(ArmError::UserAssignedNotInType)),
        (format!(r#"{{"identityIds":["{R1}"],"type":"None"}}"#), Err(ArmError::UserAssignedNotInType)),
        (String::from(r#"{"type":"None","userAssignedIdentities":{}}"#), Ok((false, vec![]))),
    ];
    for (json, want) in cases {
        assert_eq!(ids(json), *want, "{json}");
    }
}

#[test]
fn escapes_are_decoded_into_scratch() {
    let esc = R1.replace('/', "\\/");
    let cid_esc = CID.replacen('f', "\\u0066", 1);
    let json = format!(
        r#"{{"typ\u0065":"UserAssigned","userAssignedIdentities":{{"{esc}":{{"clientId":"{cid_esc}","principalId":"{PID}"}},"{R2}":{{}}}}}}"#
    );
    let mut scratch = vec![0u8; json.len()];
    let mut out = [UserAssigned::EMPTY; 4];
    let got = parse_arm_identity(json.as_bytes(), &mut scratch, &mut out).unwrap();
    assert_eq!(
        got,
        ArmIdentities {
            system: false,
            user_assigned: 2
        }
    );
    assert_eq!(out[0].resource_id, R1);
    assert_eq!(out[0].client_id, Some(CID));
    assert_eq!(out[0].principal_id, Some(PID));
    assert_eq!(out[1].resource_id, R2);
    // Strings without escapes borrow from the JSON itself.
    let range = json.as_bytes().as_ptr_range();
    assert!(range.contains(&out[1].resource_id.as_ptr()));
    assert!(range.contains(&out[0].principal_id.unwrap().as_ptr()));
    assert!(!range.contains(&out[0].resource_id.as_ptr()));

    // The exact scratch needed is the decoded length of the escaped strings.
    let needed = R1.len() + CID.len();
    for size in [0, 1, R1.len(), needed - 1] {
        let mut scratch = vec![0u8; size];
        let mut out = [UserAssigned::EMPTY; 4];
        assert_eq!(
            parse_arm_identity(json.as_bytes(), &mut scratch, &mut out),
            Err(ArmError::ScratchTooSmall),
            "{size}"
        );
    }
    let mut scratch = vec![0u8; needed];
    let mut out = [UserAssigned::EMPTY; 4];
    assert!(parse_arm_identity(json.as_bytes(), &mut scratch, &mut out).is_ok());

    // Escaped field names, surrogate pairs, and bad escapes.
    #[rustfmt::skip]
    let cases: &[(String, Ids)] = &[
        (format!(r#"{{"\u0074ype":"UserAssigned","identity\u0049ds":["{esc}"]}}"#), Ok((false, vec![R1.into()]))),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\ud83d\ude00"]}}"#), Ok((false, vec![format!("{R1}\u{1f600}")]))),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\ud83d"]}}"#), Err(ArmError::Malformed)),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\ude00"]}}"#), Err(ArmError::Malformed)),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\x"]}}"#), Err(ArmError::Malformed)),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\u00"]}}"#), Err(ArmError::Malformed)),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\n"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::ControlCharacter))),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\u0000"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::ControlCharacter))),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\\x"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}\"x"]}}"#), Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))),
    ];
    for (json, want) in cases {
        assert_eq!(ids(json), *want, "{json}");
    }
}

#[test]
fn too_many() {
    let json = format!(
        r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{}},"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/gone":null,"{R2}":{{}},"{R3}":{{"clientId":"{CID}"}}}}}}"#
    );
    for n in 0..3 {
        assert_eq!(
            parse_n(&json, n),
            Err(ArmError::TooMany { needed: 3 }),
            "{n}"
        );
    }
    assert_eq!(parse_n(&json, 3).map(|(_, l)| l.len()), Ok(3));
    // Validation goes on past the end of `out`, and a type error comes first.
    let bad = format!(r#"{{"type":"UserAssigned","identityIds":["{R1}","{R2}","/nope"]}}"#);
    assert_eq!(
        parse_n(&bad, 1),
        Err(ArmError::InvalidResourceId(IdentityError::NotAResourceId))
    );
    let wrong_type = format!(r#"{{"type":"SystemAssigned","identityIds":["{R1}","{R2}"]}}"#);
    assert_eq!(
        parse_n(&wrong_type, 1),
        Err(ArmError::UserAssignedNotInType)
    );
    // 1000 identities (the VM limit; 20 under Miri, which is ~1000× slower).
    let n = if cfg!(miri) { 20 } else { 1000 };
    let mut big = String::from(r#"{"type":"UserAssigned","userAssignedIdentities":{"#);
    for i in 0..n {
        if i > 0 {
            big.push(',');
        }
        big.push_str(&format!(
            r#""{R1}{i}":{{"clientId":"{CID}","principalId":"{PID}"}}"#
        ));
    }
    big.push_str("}}");
    assert_eq!(parse_n(&big, n - 1), Err(ArmError::TooMany { needed: n }));
    let (_, list) = parse_n(&big, n).unwrap();
    assert_eq!(list.len(), n);
    assert_eq!(list[n - 1].0, format!("{R1}{}", n - 1));
}

#[test]
fn bad_ids() {
    #[rustfmt::skip]
    let cases: &[(String, ArmError)] = &[
        (String::from(r#"{"type":"UserAssigned","identityIds":["/subscriptions/s"]}"#), ArmError::InvalidResourceId(IdentityError::NotAResourceId)),
        (String::from(r#"{"type":"UserAssigned","identityIds":[""]}"#), ArmError::InvalidResourceId(IdentityError::Empty)),
        (format!(r#"{{"type":"UserAssigned","identityIds":["{R1}{}"]}}"#, "x".repeat(500)), ArmError::InvalidResourceId(IdentityError::TooLong)),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":"not-a-guid"}}}}}}"#), ArmError::InvalidClientId(IdentityError::NotAGuid)),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":""}}}}}}"#), ArmError::InvalidClientId(IdentityError::Empty)),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"principalId":"{CID}x"}}}}}}"#), ArmError::InvalidPrincipalId(IdentityError::NotAGuid)),
        (format!(r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":{CID:?}, "principalId":"a b"}}}}}}"#), ArmError::InvalidPrincipalId(IdentityError::ControlCharacter)),
    ];
    for (json, want) in cases {
        assert_eq!(ids(json), Err(*want), "{json}");
    }
    // The property-level principalId and tenantId are not checked.
    assert_eq!(
        ids(r#"{"type":"SystemAssigned","principalId":"x","tenantId":7}"#),
        Ok((true, vec![]))
    );
}

#[test]
fn unknown_fields_are_skipped() {
    let json = format!(
        r#"{{
            "unknown": {{"a": [1, {{"b": [true, false, null, "s\"}}]"]}}], "c": -1.5e3, "d": {{}}}},
            "type": "UserAssigned",
            "principalId": null,
            "tenantId": "{PID}",
            "list": [[[]], {{}}, "x"],
            "userAssignedIdentities": {{
                "{R1}": {{"extra": {{"x": [1, 2, {{"y": null}}]}}, "clientId": "{CID}", "more": [], "principalId": null, "n": 12}}
            }},
            "last": true
        }}"#
    );
    assert_eq!(
        parse(&json),
        Ok((false, vec![(R1.into(), Some(CID.into()), None)]))
    );
    // Field names compare without case.
    let json = format!(
        r#"{{"Type":"userassigned","UserAssignedIdentities":{{"{R1}":{{"ClientID":"{CID}"}}}}}}"#
    );
    assert_eq!(
        parse(&json),
        Ok((false, vec![(R1.into(), Some(CID.into()), None)]))
    );
}

#[test]
fn malformed() {
    use ArmError::*;
    let deep = format!(
        r#"{{"type":"None","x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let ok_depth = format!(
        r#"{{"type":"None","x":{}{}}}"#,
        "[".repeat(31),
        "]".repeat(31)
    );
    #[rustfmt::skip]
    let cases: &[(&str, ArmError)] = &[
        ("", Malformed),
        ("null", Malformed),
        ("[]", Malformed),
        ("\"SystemAssigned\"", Malformed),
        ("{", Malformed),
        ("{}", MissingType),
        (r#"{"principalId":"x"}"#, MissingType),
        (r#"{"type":"None"} x"#, Malformed),
        (r#"{"type":"None",}"#, Malformed),
        (r#"{"type":null}"#, Malformed),
        (r#"{"type":1}"#, Malformed),
        (r#"{"type":"None","type":"None"}"#, DuplicateField),
        (r#"{"type":"UserAssigned","userAssignedIdentities":{},"userAssignedIdentities":{}}"#, DuplicateField),
        (r#"{"type":"UserAssigned","identityIds":[],"identityIds":[]}"#, DuplicateField),
        (r#"{"type":"UserAssigned","userAssignedIdentities":[]}"#, Malformed),
        (r#"{"type":"UserAssigned","userAssignedIdentities":"x"}"#, Malformed),
        (r#"{"type":"UserAssigned","userAssignedIdentities":{"/x":"y"}}"#, Malformed),
        (r#"{"type":"UserAssigned","userAssignedIdentities":{"/x":true}}"#, Malformed),
        (r#"{"type":"UserAssigned","identityIds":{}}"#, Malformed),
        (r#"{"type":"UserAssigned","identityIds":[1]}"#, Malformed),
        (r#"{"type":"UserAssigned","identityIds":[null]}"#, Malformed),
        (r#"{"type":"UserAssigned","identityIds":["/subscriptions/s/resourceGroups/rg/providers/M/t/a",]}"#, Malformed),
        (r#"{"type":"None","x":"unterminated}"#, Malformed),
        (r#"{"type":"None","x":-}"#, Malformed),
        (r#"{"type":"None","x":01}"#, Malformed),
        (r#"{"type":"None","x":1.}"#, Malformed),
        (r#"{"type":"None","x":.5}"#, Malformed),
        (r#"{"type":"None","x":1e}"#, Malformed),
        (r#"{"type":"None","x":tru}"#, Malformed),
        (r#"{"type":"None","x":nul}"#, Malformed),
        (r#"{"type":"None","x":True}"#, Malformed),
        (r#"{"type":"None","x":"\x"}"#, Malformed),
        (r#"{"type":"None","x":"\u12"}"#, Malformed),
        ("{\"type\":\"None\",\"x\":\"a\tb\"}", Malformed),
        (r#"{"type":"None","x":[1,]}"#, Malformed),
        (r#"{"type":"None","x":{"a":1,}}"#, Malformed),
        (r#"{"type":"None","x":{"a"}}"#, Malformed),
        (r#"{"type":"None","x":{1:2}}"#, Malformed),
        (r#"{"type":"None"}{}"#, Malformed),
        (&deep, TooDeep),
    ];
    for (json, want) in cases {
        assert_eq!(ids(json), Err(*want), "{json}");
    }
    assert_eq!(ids(&ok_depth), Ok((false, vec![])));
    let dup = format!(
        r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"clientId":"{CID}","clientId":"{CID}"}}}}}}"#
    );
    assert_eq!(ids(&dup), Err(DuplicateField));
    let dup = format!(
        r#"{{"type":"UserAssigned","userAssignedIdentities":{{"{R1}":{{"principalId":null,"PrincipalId":null}}}}}}"#
    );
    assert_eq!(ids(&dup), Err(DuplicateField));
    // Arbitrary bytes never panic.
    let samples: &[&[u8]] = &[
        b"\xff",
        b"{\"type\":\"\xff\"}",
        b"{\"\\",
        b"{\"a\":\"\\",
        b"[[[",
        b"]]]}",
        b"{\"type\":\"None\",\"x\":-}",
    ];
    for s in samples {
        let mut out = [UserAssigned::EMPTY; 2];
        assert!(parse_arm_identity(s, &mut [0u8; 16], &mut out).is_err());
    }
}

#[test]
fn user_assigned_identity() {
    assert!(UserAssigned::EMPTY.identity().is_err());
    let (_, list) = parse(&format!(
        r#"{{"type":"UserAssigned","identityIds":["{R1}"]}}"#
    ))
    .unwrap();
    let u = UserAssigned {
        resource_id: &list[0].0,
        client_id: None,
        principal_id: None,
    };
    let id = u.identity().unwrap();
    assert_eq!(id.kind(), IdentityKind::ResourceId);
    assert_eq!(id.value(), R1);
}

#[test]
fn errors_display() {
    assert_eq!(
        format!("{}", ArmError::TooMany { needed: 3 }),
        "more user-assigned identities than the output holds (3 needed)"
    );
    assert_eq!(
        format!("{}", ArmError::InvalidClientId(IdentityError::NotAGuid)),
        "user-assigned identity has an invalid clientId: client or object id is not a GUID"
    );
    assert_eq!(
        format!("{}", ArmError::MissingType),
        ArmError::MissingType.as_str()
    );
}
