#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (run from anywhere; files are added to corpus/<target>/)."""
import os, hashlib
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
bodies = {
 "e01": '{"access_token":"<redacted>","client_id":"fe83865b-495e-4ec7-9574-12b264882c9f","expires_in":"86311","expires_on":"1643312761","ext_expires_in":"86399","not_before":"1643226061","resource":"https://management.azure.com","token_type":"Bearer"}',
 "e02": '{"access_token": "redacted", "client_id": "client-id", "expires_in": "86400", "expires_on": "1619561622", "ext_expires_in": "86399", "not_before": "1619474922", "resource": "https://management.azure.com", "token_type": "Bearer"}',
 "e03": '{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiIsIng1dCI6InJ0c0ZULWItN0x1WTdEVlllU05LY0lKN1ZuYyIsImtpZCI6InJ0c0ZULWItN0x1WTdEVlllU05LY0lKN1ZuYyJ9.....<elided>","client_id":"ebdab26b-8a80-402c-821f-d5d203342fc2","expires_in":"86132","expires_on":"1765008628","ext_expires_in":"86399","not_before":"1764921928","resource":"https://management.azure.com/","token_type":"Bearer"}',
 "e04": '{"access_token":"eyJ0eXAi...","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://management.azure.com/","token_type":"Bearer"}',
 "e05": '{"access_token":"dummytoken","client_id":"be5947ed-3560-4afe-9504-59967a63f810","expires_in":"3599","expires_on":"1541705014","ext_expires_in":"262800","not_before":"1508961830","resource":"https://va"}',
 "e05_400": '{"error":"invalid_request","error_description":"Bad request"}',
 "e05_404": '{"error":"not_found","error_description":"Not found"}',
 "e05_405": '{"error":"method_not_allowed","error_description":"Not allowed"}',
 "e05_429": '{"error":"too_many_requests","error_description":"Too many requests"}',
 "e05_500": '{"error":"server_error","error_description":"Server error"}',
 "e06": '{"error":"invalid_request","error_description":"Required metadata header not specified"}',
 "e07": '{"error":"invalid_request","error_description":"Identity not found"}',
 "e08": '{"error":"invalid_request","error_description":"Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request"}',
 "e09": '{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal named user.read was not found in the tenant named Microsoft. ...\\r\\nTrace ID: 2dff494a-...\\r\\nCorrelation ID: 77145480-...\\r\\nTimestamp: 2022-11-10 23:12:37Z","error_codes":[500011],"timestamp":"2022-11-10 23:12:37Z","trace_id":"2dff494a-0226-4f41-8859-d9f560ca8903","correlation_id":"77145480-bc5a-4ebe-ae4d-e4a8b7d727cf","error_uri":"https://westus2.login.microsoft.com/error?code=500011"}',
 "e10": '{"error":"connecting to 169.254.169.254:80: connecting to 169.254.169.254:80: dial tcp 169.254.169.254:80: connectex: A socket operation was attempted to an unreachable network."}',
 "e11": '{"access_token":"eyJ0eXAi...","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://management.azure.com/","token_type":"Bearer","client_id":"712eac09-e943-418c-9be6-9fd5c91078bl"}',
 "e12": '{"access_token":"eyJ0eXAi\u2026","expires_on":"1586984735","resource":"https://vault.azure.net","token_type":"Bearer","client_id":"5E29463D-71DA-4FE0-8E69-999B57DB23B0"}',
 "e13": '{"access_token": "redacted", "expires_on": "05/22/2021 17:14:33 +00:00", "resource": "https://management.azure.com", "token_type": "Bearer", "client_id": "6d807b1c-2a6f-41a0-b428-d0e3a08382a0"}',
 "e14": '{"access_token":"eyJ0eXAi\u2026","expires_on":"09/14/2017 00:00:00 PM +00:00","resource":"https://vault.azure.net","token_type":"Bearer"}',
 "e15": '{"statusCode":500,"message":"An unexpected error occured while fetching the AAD Token.","correlationId":"4ce26535-1769-4001-96e3-9019ce00922d"}',
 "e16_401": '{"error":"unauthorized_client","error_description":"Missing Basic Authorization header","error_codes":[401]}',
 "e16": '{"token_type":"Bearer","expires_in":"85770","expires_on":"1700085770","ext_expires_in":86399,"access_token":"*","resource":"https://management.azure.com"}',
 "e17": '{"token_type":"Bearer","access_token":"eyJ0eXAiO...","expires_on":1765244611,"resource":"https://vault.azure.net/"}',
 "e17_err": '{"error":{"correlationId":"aaaa0000-bb11-2222-33cc-444444dddddd","code":"SecretHeaderNotFound","message":"Secret is not found in the request headers."}}',
 "e18": '{"error":{"code":"AudienceNotSupported","message":"Audience scope is not a supported MSI token audience.Supported audiences:https://management.core.windows.net/,https://management.azure.com/,https://graph.windows.net/,https://vault.azure.net,..."}}',
 "e19": '{"access_token":"****","expires_in":3600,"expires_on":1700003600,"resource":"scope","token_type":"Bearer"}',
 # differential-friendly shapes
 "in_str": '{"access_token":"t","expires_in":"3600"}',
 "in_num": '{"expires_in":3600,"access_token":"t"}',
 "in_refresh": '{"access_token":"t","expires_in":7200,"refresh_in":1800}',
 "in_escapes": '{"access_token":"a\\/b\\u0041\\ud83d\\ude00\\"c","expires_in":"60"}',
 "in_unknown": '{"x":[1,{"y":[]}],"z":{"a":{"b":null}},"n":null,"b":true,"f":-1.5e3,"access_token":"t","expires_in":"1"}',
 "on_rfc3339": '{"access_token":"t","expires_on":"2023-11-14T22:13:20Z","token_type":"bearer"}',
 # malformed
 "bad_empty": '',
 "bad_notjson": '<html>502 Bad Gateway</html>',
 "bad_trailing": '{"access_token":"t","expires_in":"1"} x',
 "bad_unclosed": '{"access_token":"t","expires_in":"1"',
 "bad_dup": '{"access_token":"t","access_token":"u","expires_in":"1"}',
 "bad_fraction": '{"access_token":"t","expires_in":3599.0}',
 "bad_negative": '{"access_token":"t","expires_in":-1}',
 "bad_null": '{"access_token":"t","expires_in":null}',
 "bad_surrogate": '{"access_token":"a\\ud83db","expires_in":"1"}',
 "bad_control": '{"access_token":"a\\u000ab","expires_in":"1"}',
 "bad_pop": '{"access_token":"t","expires_in":"1","token_type":"pop"}',
 "bad_date": '{"access_token":"t","expires_on":"13/01/2021 00:00:00"}',
 "bad_bare": '{"access_token":"t","expires_in":"1","x":tru}',
}
def w(target, name, data):
    d = os.path.join(root, target); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, name), "wb").write(data)
for name, b in bodies.items():
    raw = b.encode()
    w("token_body", name, raw)
    w("token_body_vs_serde_json", name, raw)
status = {"e05_400":"400 Bad Request","e05_404":"404 Not Found","e05_405":"405 Method Not Allowed","e05_429":"429 Too Many Requests","e05_500":"500 Internal Server Error","e06":"400 Bad Request","e07":"400 Bad Request","e08":"400 Bad Request","e09":"400 Bad Request","e10":"403 Forbidden","e15":"500 Internal Server Error","e16_401":"401 Unauthorized","e17_err":"400 Bad Request","e18":"400 Bad Request"}
def cl(st, body, extra=""):
    return (f"HTTP/1.1 {st}\r\nContent-Length: {len(body)}\r\nContent-Type: application/json; charset=utf-8\r\nServer: IMDS/150.870.65.528\r\n{extra}\r\n").encode()+body
def chunked(st, body, extra=""):
    out = f"HTTP/1.1 {st}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n{extra}\r\n".encode()
    for i in range(0, len(body), 64):
        c = body[i:i+64]; out += f"{len(c):x}\r\n".encode()+c+b"\r\n"
    return out + b"0\r\n\r\n"
for name, b in bodies.items():
    if name.startswith("bad_"): continue
    raw = b.encode(); st = status.get(name, "200 OK")
    w("response", name+"_cl", cl(st, raw))
    w("response", name+"_chunked", chunked(st, raw))
arc = bodies["e16_401"].encode()
w("response", "e16_401_challenge", cl("401 Unauthorized", arc, "WWW-Authenticate: Basic realm=/var/opt/azcmagent/tokens/0123.key\r\n"))
w("response", "e15_400_chunked_empty", b"HTTP/1.1 400 Bad Request\r\nServer: Kestrel\r\nTransfer-Encoding: chunked\r\nX-CORRELATION-ID: 4ce26535\r\n\r\n0\r\n\r\n")
w("response", "retry_after_secs", cl("429 Too Many Requests", bodies["e05_429"].encode(), "Retry-After: 5\r\n"))
w("response", "retry_after_date", cl("503 Service Unavailable", b"", "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"))
w("response", "gone_410", cl("410 Gone", b""))
w("response", "continue_then_200", b"HTTP/1.1 100 Continue\r\n\r\n"+cl("200 OK", bodies["in_str"].encode()))
w("response", "close_delimited", b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"+bodies["e19"].encode())
w("response", "no_content_204", b"HTTP/1.1 204 No Content\r\n\r\n")
w("response", "chunk_ext_trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\n{\"acc\r\n23\r\ness_token\":\"t\",\"expires_in\":\"3600\"}\r\n0\r\nX-Trailer: 1\r\n\r\n")
# malformed responses
w("response", "bad_both_framings", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
w("response", "bad_cl_mismatch", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x")
w("response", "bad_cl_notnum", b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n{")
w("response", "bad_chunk_size", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
w("response", "bad_gzip", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")
w("response", "bad_too_large", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n{")
w("response", "bad_status", b"HTTP/1.1 99 Odd\r\n\r\n")
w("response", "bad_truncated", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"access_token\"")
w("response", "bad_garbage", b"\x00\xffGET / HTTP/1.1\r\n\r\n")

# --- arm_identity: the `identity` property, both forms (protocol reference §7) -------------
R = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/"
OLD = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/identities/"
CID, PID, TID = "fe83865b-495e-4ec7-9574-12b264882c9f", "5e29463d-71da-4fe0-8e69-999b57db23b0", "72f988bf-86f1-41af-91ab-2d7cd011db47"
verbatim = '''{
    "type": "SystemAssigned, UserAssigned",
    "principalId": "<guid, read-only, system identity>",
    "tenantId": "<guid, read-only>",
    "userAssignedIdentities": {
      "/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>": {
        "principalId": "<guid, read-only>",
        "clientId": "<guid, read-only>"
      }
    }
  }'''
arm = {
 "s7_verbatim": verbatim,
 "s7_filled": verbatim.replace("<guid, read-only, system identity>", PID).replace("<guid, read-only>", TID, 1)
     .replace('"principalId": "<guid, read-only>"', f'"principalId": "{PID}"').replace('"clientId": "<guid, read-only>"', f'"clientId": "{CID}"')
     .replace("<sub>", "0000").replace("<rg>", "rg").replace("<name>", "id1"),
 "s7_request": f'{{"type":"UserAssigned","userAssignedIdentities":{{"{R}a":{{}},"{R}b":{{}}}}}}',
 "s7_nospace": f'{{"type":"SystemAssigned,UserAssigned","userAssignedIdentities":{{"{R}a":{{"clientId":"{CID}","principalId":"{PID}"}}}}}}',
 "s7_lower": f'{{"type":"userAssigned","userAssignedIdentities":{{"{R}a":{{}}}}}}',
 "s7_null_removal": f'{{"type":"UserAssigned","userAssignedIdentities":{{"{R}a":{{}},"{R}b":null}}}}',
 "s7_null_dup": f'{{"type":"UserAssigned","userAssignedIdentities":{{"{R}a":{{}},"{R}A":null}}}}',
 "s7_array": f'{{"type":"UserAssigned","identityIds":["{OLD}old1","{OLD}old2"]}}',
 "s7_both_forms": f'{{"type":"SystemAssigned, UserAssigned","identityIds":["{OLD}old"],"userAssignedIdentities":{{"{R}a":{{}}}}}}',
 "s7_both_dup": f'{{"type":"UserAssigned","identityIds":["{R}a"],"userAssignedIdentities":{{"{R}A":{{}}}}}}',
 "s7_none": '{"type":"None"}',
 "s7_system": f'{{"type":"SystemAssigned","principalId":"{PID}","tenantId":"{TID}"}}',
 "s7_none_with_ids": f'{{"type":"None","userAssignedIdentities":{{"{R}a":{{}}}}}}',
 "s7_escapes": '{"type":"User\\u0041ssigned","user\\u0041ssignedIdentities":{"\\/subscriptions\\/0\\/resourceGroups\\/rg\\/providers\\/Microsoft.ManagedIdentity\\/userAssignedIdentities\\/caf\\u00e9":{"clientId":"' + CID + '"}}}',
 "s7_unknown_fields": f'{{"x":[1,{{"y":[]}}],"type":"UserAssigned","n":null,"userAssignedIdentities":{{"{R}a":{{"z":true,"clientId":null}}}},"f":-1.5e3}}',
 "bad_no_type": f'{{"userAssignedIdentities":{{"{R}a":{{}}}}}}',
 "bad_type_dup": '{"type":"None","Type":"None"}',
 "bad_type": '{"type":"SystemAssigned; UserAssigned"}',
 "bad_rid": '{"type":"UserAssigned","identityIds":["/subscriptions/s/providers/x"]}',
 "bad_guid": f'{{"type":"UserAssigned","userAssignedIdentities":{{"{R}a":{{"clientId":"712eac09-e943-418c-9be6-9fd5c91078bl"}}}}}}',
 "bad_deep": '{"type":"None","x":' + '[' * 40 + ']' * 40 + '}',
 "bad_surrogate": '{"type":"None","x":"\\ud800"}',
 "bad_trailing": '{"type":"None"},',
 "bad_ids_type": '{"type":"UserAssigned","identityIds":{}}',
}
arm["s7_many"] = '{"type":"UserAssigned","userAssignedIdentities":{' + ",".join(f'"{R}{i}":{{}}' for i in range(70)) + '}}'
for name, b in arm.items():
    w("arm_identity", name, b.encode())

# --- request: `checks::req::RequestInput` as `arbitrary` 1.x decodes it ----------------------
# Every field but the trailing pool has a fixed size: u8 is one byte, u16 two (little endian),
# bool one byte (odd = true), Option a bool then the value, and an enum a u32 (little endian)
# whose variant is (u32 * variants) >> 32.
import struct
def tag(i, n):
    t = ((i << 32) + n - 1) // n
    assert (t * n) >> 32 == i
    return struct.pack("<I", t)
def known(i): return tag(0, 3) + bytes([i])
def edit(k, at, ch, op): return tag(1, 3) + bytes([k, at, ch, op])
def pool(at, n): return tag(2, 3) + struct.pack("<HH", at, n)
def new(t): return tag(0, 2) + t
def scopes(n, a, b): return tag(1, 2) + bytes([n]) + a + b
IMDS, VMEXT = tag(0, 5), tag(1, 5)
def url(t): return tag(2, 5) + t
def authority(t): return tag(3, 5) + t
def raw(host, port, tls, path): return tag(4, 5) + host + struct.pack("<H", port) + bytes([tls]) + path
def opt(t): return b"\x00" if t is None else b"\x01" + t
def req(flavour, kind, ident, res, ep, secret=None, dcid=None, key=None, p=b""):
    return bytes([flavour, kind]) + ident + res + ep + opt(secret) + opt(dcid) + opt(key) + p
# Flavours: 0 Imds, 1 AppService2019, 2 Msi2017, 3 Arc, 4 CloudShell, 5 ServiceFabric, 6 VmExtension.
# Kinds: 0 System, 1 ClientId, 2 ObjectId, 3 ResourceId. Tables: see checks.rs `req`.
MGMT, VAULT_DEFAULT = new(known(0)), scopes(1, known(2), known(0))
reqs = {
 "imds_system": req(0, 0, known(0), MGMT, IMDS),
 "imds_client": req(0, 1, known(0), MGMT, IMDS),
 "imds_object": req(0, 2, known(1), VAULT_DEFAULT, IMDS),
 "imds_resource_id": req(0, 3, known(2), MGMT, IMDS),
 "imds_authority": req(0, 0, known(0), MGMT, authority(known(6))),
 "imds_v6": req(0, 1, known(0), new(known(5)), url(known(5))),
 "appservice_system": req(1, 0, known(0), new(known(1)), url(known(1)), secret=known(0)),
 "appservice_object": req(1, 2, known(1), MGMT, url(known(1)), secret=known(1)),
 "appservice_resource_id": req(1, 3, known(3), MGMT, url(known(1)), secret=known(0)),
 "appservice_no_secret": req(1, 0, known(0), MGMT, url(known(1))),
 "msi2017_client": req(2, 1, known(0), MGMT, url(known(8)), secret=known(0)),
 "azureml_default_id": req(2, 0, known(0), MGMT, url(known(8)), secret=known(0), dcid=known(1)),
 "azureml_bad_default_id": req(2, 0, known(0), MGMT, url(known(8)), secret=known(0), dcid=known(2)),
 "arc_first": req(3, 0, known(0), MGMT, url(known(3))),
 "arc_second": req(3, 0, known(0), MGMT, url(known(3)), key=known(0)),
 "arc_key_newline": req(3, 0, known(0), MGMT, url(known(3)), key=known(1)),
 "arc_user_assigned": req(3, 1, known(0), MGMT, url(known(3))),
 "cloudshell_post": req(4, 0, known(0), new(known(5)), url(known(4))),
 "servicefabric": req(5, 0, known(0), new(known(2)), url(known(2)), secret=known(0)),
 "servicefabric_http": req(5, 0, known(0), MGMT, url(known(1)), secret=known(0)),
 "vmextension_client": req(6, 1, known(0), MGMT, VMEXT),
 "raw_endpoint": req(0, 0, known(0), MGMT, raw(known(2), 8080, 0, known(1))),
 "raw_bad_host": req(0, 0, known(0), MGMT, raw(known(4), 80, 0, known(0))),
 "edit_resource_crlf": req(0, 0, known(0), new(edit(0, 10, 0x0d, 1)), IMDS),
 "edit_secret_lf": req(1, 0, known(0), MGMT, url(known(1)), secret=edit(1, 3, 0x0a, 1)),
 "edit_client_nul": req(0, 1, edit(0, 35, 0x00, 0), MGMT, IMDS),
 "edit_url_c1": req(1, 0, known(0), MGMT, url(edit(1, 25, 0x80, 1)), secret=known(0)),
 "pool_resource_injection": req(0, 0, known(0), new(pool(0, 27)), IMDS, p=b"https://x\r\nHost: evil.test"),
 "pool_secret": req(1, 0, known(0), MGMT, url(known(1)), secret=pool(0, 9), p=b"s3cr3t\x7fx"),
}
for name, b in reqs.items():
    w("request", name, b)
