"""Golden answers: raw HTTP requests to the emulator, compared byte for byte with what a
portal answers according to docs/protocol.md (timestamps and tokens normalised; key
order, escaping and number formats kept).

Each row is one request shape. No client library is involved: the request goes out as
written here over a real socket, and the status, the content type and the body must match.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import attrs
import pytest

from aiob24flow.emulator import EmulatorServer, Portal, PortalConfig

HOOK = "/rest/1/emulator-webhook-code-1"
HOOK2 = "/rest/2/emulator-webhook-code-2"
BAD = "/rest/1/wrong-code"
ACT = "tasks.flow.Flow.activate"
PIN = "tasks.flow.Flow.pin"
GET = "tasks.flow.Flow.get"
JSON = "application/json; charset=utf-8"
XML = "text/xml; charset=utf-8"

T = (
    '{"start":N,"finish":N,"duration":N,"processing":N,"date_start":"D","date_finish":"D",'
    '"operating_reset_at":R,"operating":0}'
)
TRUE = '{"result":true,"time":' + T + "}"
FALSE = '{"result":false,"time":' + T + "}"
FLOW3 = (
    '{"id":3,"creatorId":1,"ownerId":1,"groupId":0,"templateId":0,"efficiency":100,'
    '"active":true,"plannedCompletionTime":7200,"activity":"2026-01-01T12:00:00+00:00",'
    '"name":"Flow 3","description":"","distributionType":"queue",'
    '"responsibleList":[["user","1"]],"demo":false,"responsibleCanChangeDeadline":false,'
    '"matchWorkTime":true,"matchSchedule":false,"taskControl":false,"notifyAtHalfTime":false,'
    '"notifyOnQueueOverflow":null,"notifyOnTasksInProgressOverflow":null,'
    '"notifyWhenEfficiencyDecreases":null,"taskCreators":[["meta-user","all-users"]],'
    '"team":[["user","1"]],"trialFeatureEnabled":false}'
)
GET3 = '{"result":' + FLOW3 + ',"time":' + T + "}"
GET2 = GET3.replace('"id":3', '"id":2').replace('"Flow 3"', '"Flow 2"')


def err(code: str, text: str) -> str:
    return '{"error":"' + code + '","error_description":"' + text + '"}'


CANNOT = err("0", "Cannot find flow")
NOFLOW = err("0", "Flow with this ID does not exist.")
MISSING = err("100", "Could not find value for parameter {flowId}")
NOTFOUND = err("ERROR_METHOD_NOT_FOUND", "Method not found!")
CREDS = err("INVALID_CREDENTIALS", "Invalid request credentials")
NOAUTH = err("NO_AUTH_FOUND", "Wrong authorization data")
BADTOKEN = err("invalid_token", "Unable to get application by token")
EXPIRED = err("expired_token", "The access token provided has expired.")
LIMIT = err("QUERY_LIMIT_EXCEEDED", "Too many requests")
NOT_IN_BATCH = err("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
TOO_MANY = err("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")


def invalid(shown: str) -> str:
    return err(
        "100",
        "Invalid value {" + shown + "} to match with parameter {flowId}. "
        "Should be value of type int.",
    )


def batch(
    result: str, errors: str = "[]", times: str = "[]", total: str = "[]", nxt: str = "[]"
) -> str:
    return (
        '{"result":{"result":' + result + ',"result_error":' + errors + ',"result_total":'
        + total + ',"result_next":' + nxt + ',"result_time":' + times + '},"time":' + T + "}"
    )  # fmt: skip


def ok_map(keys: list[str], value: str = "true") -> tuple[str, str]:
    """``result`` and ``result_time`` for string keys that all succeeded."""
    res = "{" + ",".join(f'"{k}":{value}' for k in keys) + "}"
    times = "{" + ",".join(f'"{k}":{T}' for k in keys) + "}"
    return res, times


@attrs.frozen
class Case:
    id: str
    verb: str
    path: str
    status: int
    body_out: str
    ctype: str = JSON
    body: bytes | str | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    config: dict[str, Any] = attrs.field(factory=dict)
    before: int = 0  # identical requests sent first (a spent token, a full bucket)
    tls: bool = False
    plain: bool = False  # to the plain-HTTP port of a TLS emulator


def post_json(id: str, path: str, body: str, status: int, out: str, **kw: Any) -> Case:
    return Case(id, "POST", path, status, out, body=body,
                headers={"Content-Type": "application/json"}, **kw)  # fmt: skip


def post_form(id: str, path: str, body: str, status: int, out: str, **kw: Any) -> Case:
    return Case(id, "POST", path, status, out, body=body,
                headers={"Content-Type": "application/x-www-form-urlencoded"}, **kw)  # fmt: skip


def bearer(token: str = "{TOKEN}") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def cmd(**commands: str) -> str:
    import json

    return json.dumps({"halt": 0, "cmd": commands})


CASES: list[Case] = []
add = CASES.append

# -- single calls: verbs, suffixes, trailing slash (§1.1, §1.2) -------------------------------
for method, flow, out in ((ACT, 1, TRUE), (PIN, 1, TRUE), (GET, 3, GET3)):
    short = method.rsplit(".", 1)[1]
    add(post_json(f"{short}-post-json", f"{HOOK}/{method}", f'{{"flowId":{flow}}}', 200, out))
    add(post_form(f"{short}-post-form", f"{HOOK}/{method}", f"flowId={flow}", 200, out))
    add(Case(f"{short}-get-query", "GET", f"{HOOK}/{method}?flowId={flow}", 200, out))
    add(Case(f"{short}-post-query", "POST", f"{HOOK}/{method}?flowId={flow}", 200, out))
    add(post_json(f"{short}-json-suffix", f"{HOOK}/{method}.json", f'{{"flowId":{flow}}}', 200,
                  out))  # fmt: skip
    add(post_json(f"{short}-trailing-slash", f"{HOOK}/{method}/", f'{{"flowId":{flow}}}', 200,
                  out))  # fmt: skip
    add(post_json(f"{short}-json-suffix-slash", f"{HOOK}/{method}.json/", f'{{"flowId":{flow}}}',
                  200, out))  # fmt: skip
    add(Case(f"{short}-oauth-bearer", "POST", f"/rest/{method}", 200, out,
             body=f'{{"flowId":{flow}}}', headers=bearer()))  # fmt: skip
    add(post_json(f"{short}-oauth-auth-param", f"/rest/{method}",
                  f'{{"flowId":{flow},"auth":"{{TOKEN}}"}}', 200, out))  # fmt: skip
    add(Case(f"{short}-oauth-trailing-slash", "POST", f"/rest/{method}/", 200, out,
             body=f'{{"flowId":{flow}}}', headers=bearer()))  # fmt: skip
add(Case("get-oauth-access-token-query", "GET", f"/rest/{GET}?flowId=3&access_token={{TOKEN}}",
         200, GET3))  # fmt: skip
add(Case("act-bearer-lower-case", "POST", f"/rest/{ACT}", 200, TRUE, body='{"flowId":1}',
         headers={"Authorization": "bearer {TOKEN}",
                  "Content-Type": "application/json"}))  # fmt: skip
add(Case("pin-twice-unpins", "POST", f"{HOOK}/{PIN}", 200, FALSE, body='{"flowId":1}',
         headers={"Content-Type": "application/json"}, before=1))  # fmt: skip
add(Case("get-query-and-body-body-wins", "POST", f"{HOOK}/{GET}?flowId=3", 200, GET2,
         body='{"flowId":2}', headers={"Content-Type": "application/json"}))  # fmt: skip

# -- the .xml transport (§1.1 names it; protocol.md does not show its form, which follows
# CRestServer::outputXml in the S1 source: no XML declaration, one element per key, <item>
# for a list entry, true as "1", false and null empty, PHP's 14-digit floats) --------------
XT = (
    "<time><start>N</start><finish>N</finish><duration>N</duration><processing>N</processing>"
    "<date_start>D</date_start><date_finish>D</date_finish>"
    "<operating_reset_at>R</operating_reset_at><operating>0</operating></time>"
)
XFLOW3 = (
    "<id>3</id><creatorId>1</creatorId><ownerId>1</ownerId><groupId>0</groupId>"
    "<templateId>0</templateId><efficiency>100</efficiency><active>1</active>"
    "<plannedCompletionTime>7200</plannedCompletionTime>"
    "<activity>2026-01-01T12:00:00+00:00</activity><name>Flow 3</name>"
    "<description></description><distributionType>queue</distributionType>"
    "<responsibleList><item><item>user</item><item>1</item></item></responsibleList>"
    "<demo></demo><responsibleCanChangeDeadline></responsibleCanChangeDeadline>"
    "<matchWorkTime>1</matchWorkTime><matchSchedule></matchSchedule><taskControl></taskControl>"
    "<notifyAtHalfTime></notifyAtHalfTime><notifyOnQueueOverflow></notifyOnQueueOverflow>"
    "<notifyOnTasksInProgressOverflow></notifyOnTasksInProgressOverflow>"
    "<notifyWhenEfficiencyDecreases></notifyWhenEfficiencyDecreases>"
    "<taskCreators><item><item>meta-user</item><item>all-users</item></item></taskCreators>"
    "<team><item><item>user</item><item>1</item></item></team>"
    "<trialFeatureEnabled></trialFeatureEnabled>"
)
add(post_json("act-xml-suffix", f"{HOOK}/{ACT}.xml", '{"flowId":1}', 200,
              f"<response><result>1</result>{XT}</response>", ctype=XML))  # fmt: skip
add(post_json("pin-xml-false-is-empty", f"{HOOK}/{PIN}.xml", '{"flowId":1}', 200,
              f"<response><result></result>{XT}</response>", ctype=XML, before=1))  # fmt: skip
add(post_json("get-xml-lists-are-items", f"{HOOK}/{GET}.xml", '{"flowId":3}', 200,
              f"<response><result>{XFLOW3}</result>{XT}</response>", ctype=XML))  # fmt: skip
add(post_json("get-xml-suffix", f"{HOOK}/{GET}.xml", '{"flowId":9}', 400,
              "<response><error>0</error><error_description>Flow with this ID does not "
              "exist.</error_description></response>", ctype=XML))  # fmt: skip
add(post_json("echo-xml-escapes", f"{HOOK}/{ACT}.xml", '{"flowId":"<x>&\'\\""}', 400,
              "<response><error>100</error><error_description>Invalid value "
              "{&lt;x&gt;&amp;&apos;&quot;} to match with parameter {flowId}. Should be value "
              "of type int.</error_description></response>", ctype=XML))  # fmt: skip

# -- flowId binding (§2.4) and access (§2.1) -----------------------------------------------
for id_, body, out in (
    ("flowid-missing", "{}", MISSING),
    ("flowid-wrong-case", '{"flowid":1}', MISSING),
    ("flowid-string-number", '{"flowId":"2"}', TRUE),
    ("flowid-leading-space", '{"flowId":" 2"}', TRUE),
    ("flowid-exponent", '{"flowId":"1e3"}', NOFLOW),
    ("flowid-float-string", '{"flowId":"5.0"}', TRUE),
    ("flowid-float", '{"flowId":5.7}', TRUE),
    ("flowid-letters", '{"flowId":"abc"}', invalid("abc")),
    ("flowid-empty", '{"flowId":""}', invalid("")),
    ("flowid-true", '{"flowId":true}', invalid("1")),
    ("flowid-false", '{"flowId":false}', invalid("")),
    ("flowid-null", '{"flowId":null}', invalid("")),
    ("flowid-array", '{"flowId":[1]}', invalid("Array")),
    ("flowid-object", '{"flowId":{"a":1}}', invalid("Array")),
    ("flowid-hex", '{"flowId":"0x1A"}', invalid("0x1A")),
    ("flowid-zero-admin", '{"flowId":0}', NOFLOW),
    ("flowid-negative-admin", '{"flowId":-5}', NOFLOW),
    ("flow-missing-admin", '{"flowId":9}', NOFLOW),
    ("echo-slash", '{"flowId":"a/b"}', invalid("a\\/b")),
    ("echo-quote", '{"flowId":"a\\"b"}', invalid("a\\u0022b")),
    ("echo-tags-amp-apos", '{"flowId":"<x>&\'"}', invalid("\\u003Cx\\u003E\\u0026\\u0027")),
    ("echo-line-separator", '{"flowId":"a\\u2028b"}', invalid("a\\u2028b")),
    ("echo-unicode-kept", '{"flowId":"поток"}', invalid("поток")),
):
    status = 200 if out == TRUE else 400
    add(post_json(id_, f"{HOOK}/{ACT}", body, status, out))
add(post_json("user2-activate-denied", f"{HOOK2}/{ACT}", '{"flowId":1}', 400, CANNOT))
add(post_json("user2-activate-missing", f"{HOOK2}/{ACT}", '{"flowId":9}', 400, CANNOT))
add(post_json("user2-activate-zero", f"{HOOK2}/{ACT}", '{"flowId":0}', 400, CANNOT))
add(post_json("user2-pin-readable", f"{HOOK2}/{PIN}", '{"flowId":1}', 200, TRUE))
add(post_json("user2-get-readable", f"{HOOK2}/{GET}", '{"flowId":3}', 200, GET3))
add(post_json("pin-missing-admin-no-check", f"{HOOK}/{PIN}", '{"flowId":9}', 200, TRUE))
add(post_json("get-missing-admin", f"{HOOK}/{GET}", '{"flowId":9}', 400, NOFLOW))
add(post_json("is-exists-name", f"{HOOK}/tasks.flow.Flow.isExists",
              '{"flowData":{"name":"Flow 3"}}', 200,
              '{"result":{"exists":true},"time":' + T + "}"))  # fmt: skip
add(post_json("is-exists-own-id", f"{HOOK}/tasks.flow.Flow.isExists",
              '{"flowData":{"name":"Flow 3","id":3}}', 200,
              '{"result":{"exists":false},"time":' + T + "}"))  # fmt: skip
# isExists without a name (§2.6 gives no text; S1 source: the FlowDto's name stays unset and
# validateName(true) throws "name: cannot be null"); an empty name is a name.
NONAME = err("0", "name: cannot be null")
for id_, body in (
    ("is-exists-no-flow-data", "{}"),
    ("is-exists-flow-data-empty", '{"flowData":{}}'),
    ("is-exists-no-name", '{"flowData":{"id":3}}'),
    ("is-exists-null-name", '{"flowData":{"name":null}}'),
    ("is-exists-array-name", '{"flowData":{"name":["Flow 3"]}}'),
):
    add(post_json(id_, f"{HOOK}/tasks.flow.Flow.isExists", body, 400, NONAME))
add(post_json("is-exists-empty-name", f"{HOOK}/tasks.flow.Flow.isExists",
              '{"flowData":{"name":""}}', 200,
              '{"result":{"exists":false},"time":' + T + "}"))  # fmt: skip
add(post_form("is-exists-no-flow-data-form", f"{HOOK}/tasks.flow.Flow.isExists", "flowId=3",
              400, NONAME))  # fmt: skip

# -- method names (§1.3) --------------------------------------------------------------------
add(post_json("case-lower-controller", f"{HOOK}/tasks.flow.flow.activate", '{"flowId":1}', 404,
              NOTFOUND))  # fmt: skip
add(post_json("case-upper-module", f"{HOOK}/TASKS.flow.Flow.activate", '{"flowId":1}', 404,
              NOTFOUND))  # fmt: skip
add(post_json("case-alias-and-action", f"{HOOK}/tasks.FLOW.Flow.ACTIVATE", '{"flowId":1}', 200,
              TRUE))  # fmt: skip
add(post_json("unknown-method", f"{HOOK}/tasks.flow.Flow.nope", '{"flowId":1}', 404, NOTFOUND))
add(post_json("unknown-method-wrong-code", f"{BAD}/no.such.method", "{}", 404, NOTFOUND))
add(post_json("unknown-method-no-token", "/rest/no.such.method", "{}", 404, NOTFOUND))
add(post_json("unknown-method-xml", f"{HOOK}/no.such.method.xml", "{}", 404,
              "<response><error>ERROR_METHOD_NOT_FOUND</error><error_description>Method "
              "not found!</error_description></response>", ctype=XML))  # fmt: skip

# -- authentication (§5, §6, §10) -----------------------------------------------------------
add(post_json("wrong-webhook-code", f"{BAD}/{ACT}", '{"flowId":1}', 401, CREDS))
add(post_json("unknown-webhook-user", "/rest/99/emulator-webhook-code-1/" + ACT, '{"flowId":1}',
              401, CREDS))  # fmt: skip
add(post_json("non-numeric-webhook-user", "/rest/admin/emulator-webhook-code-1/" + ACT,
              '{"flowId":1}', 401, CREDS))  # fmt: skip
add(post_json("oauth-no-token", f"/rest/{ACT}", '{"flowId":1}', 401, NOAUTH))
add(Case("oauth-unknown-token", "POST", f"/rest/{ACT}", 401, BADTOKEN, body='{"flowId":1}',
         headers=bearer("0123456789abcdef0123456789abcdef")))  # fmt: skip
add(Case("oauth-expired-token", "POST", f"/rest/{ACT}", 401, EXPIRED, body='{"flowId":1}',
         headers=bearer("{EXPIRED}")))  # fmt: skip
add(Case("oauth-expired-token-batch", "POST", "/rest/batch", 401, EXPIRED,
         body=cmd(a=f"{ACT}?flowId=1"), headers=bearer("{EXPIRED}")))  # fmt: skip
add(post_json("webhook-scope-missing", f"{HOOK}/{ACT}", '{"flowId":1}', 401,
              err("insufficient_scope",
                  "The request requires higher privileges than provided by the webhook token"),
              config={"webhook_scopes": frozenset({"crm"})}))  # fmt: skip
add(post_json("https-required-on-plain-port", f"{HOOK}/{ACT}", '{"flowId":1}', 401,
              err("INVALID_REQUEST", "Https required."), tls=True, plain=True))  # fmt: skip
add(post_json("over-tls", f"{HOOK}/{ACT}", '{"flowId":1}', 200, TRUE, tls=True))
add(Case("oauth-over-plain-port-allowed", "POST", f"/rest/{ACT}", 200, TRUE, body='{"flowId":1}',
         headers=bearer(), tls=True, plain=True))  # fmt: skip

# -- limits (§4) ----------------------------------------------------------------------------
add(post_json("bucket-full-503", f"{HOOK}/{ACT}", '{"flowId":1}', 503, LIMIT,
              config={"burst": 1, "leak": 1e-6}, before=1))  # fmt: skip
add(post_json("bucket-full-503-bad-code", f"{BAD}/{ACT}", '{"flowId":1}', 503, LIMIT,
              config={"burst": 1, "leak": 1e-6}, before=1))  # fmt: skip
add(post_json("operating-limit-429", f"{HOOK}/{ACT}", '{"flowId":1}', 429,
              err("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."),
              config={"call_cost": {ACT: 500.0}}, before=1))  # fmt: skip

# -- batch (§3, §10) ------------------------------------------------------------------------
res, times = ok_map(["a", "p"])
add(post_json("batch-mixed", f"{HOOK}/batch",
              cmd(a=f"{ACT}?flowId=5", p=f"{PIN}?flowId=5", x=f"{ACT}?flowId=9"), 200,
              batch(res, '{"x":' + NOFLOW + "}", times)))  # fmt: skip
add(post_json("batch-halt", f"{HOOK}/batch",
              '{"halt":1,"cmd":{"x":"' + ACT + '?flowId=9","a":"' + ACT + '?flowId=5","p":"'
              + PIN + '?flowId=5"}}', 200, batch("[]", '{"x":' + NOFLOW + "}")))  # fmt: skip
add(post_json("batch-halt-upper-keys", f"{HOOK}/batch",
              '{"HALT":1,"CMD":{"x":"' + ACT + '?flowId=9","a":"' + ACT + '?flowId=5"}}', 200,
              batch("[]", '{"x":' + NOFLOW + "}")))  # fmt: skip
res, times = ok_map(["a"])
add(post_json("batch-halt-after-success", f"{HOOK}/batch",
              '{"halt":1,"cmd":{"a":"' + ACT + '?flowId=5","x":"' + ACT + '?flowId=9","b":"'
              + ACT + '?flowId=6"}}', 200, batch(res, '{"x":' + NOFLOW + "}", times)))  # fmt: skip
add(post_json("batch-list-all-ok", f"{HOOK}/batch",
              '{"cmd":["' + PIN + '?flowId=1","' + PIN + '?flowId=2"]}', 200,
              batch("[true,true]", "[]", f"[{T},{T}]")))  # fmt: skip
add(post_json("batch-list-first-fails", f"{HOOK}/batch",
              '{"cmd":["' + ACT + '?flowId=9","' + PIN + '?flowId=2"]}', 200,
              batch('{"1":true}', f"[{NOFLOW}]", '{"1":' + T + "}")))  # fmt: skip
add(post_json("batch-list-second-fails", f"{HOOK}/batch",
              '{"cmd":["' + PIN + '?flowId=2","' + ACT + '?flowId=9"]}', 200,
              batch("[true]", '{"1":' + NOFLOW + "}", f"[{T}]")))  # fmt: skip
add(post_json("batch-numeric-string-keys", f"{HOOK}/batch",
              '{"cmd":{"0":"' + PIN + '?flowId=1","1":"' + PIN + '?flowId=2"}}', 200,
              batch("[true,true]", "[]", f"[{T},{T}]")))  # fmt: skip
add(post_json("batch-all-fail", f"{HOOK}/batch", cmd(x=f"{ACT}?flowId=9", y=f"{ACT}?flowId=9"),
              200, batch("[]", '{"x":' + NOFLOW + ',"y":' + NOFLOW + "}")))  # fmt: skip
add(post_json("batch-empty", f"{HOOK}/batch", '{"halt":0,"cmd":{}}', 200, batch("[]")))
add(post_json("batch-no-cmd", f"{HOOK}/batch", "{}", 200, batch("[]")))
keys50 = [f"k{i}" for i in range(50)]
res, times = ok_map(keys50)
add(post_json("batch-50", f"{HOOK}/batch",
              cmd(**{k: f"{ACT}?flowId={i + 10}" for i, k in enumerate(keys50)}), 200,
              batch(res, "[]", times)))  # fmt: skip
add(post_json("batch-51", f"{HOOK}/batch",
              cmd(**{k: f"{ACT}?flowId={i + 10}" for i, k in enumerate([*keys50, "k50"])}), 200,
              batch(res, '{"k50":' + TOO_MANY + "}", times)))  # fmt: skip
res, times = ok_map(["a"])
for name in ("download", "upload", "batch"):
    add(post_json(f"batch-forbids-{name}", f"{HOOK}/batch",
                  cmd(a=f"{ACT}?flowId=5", d=f"{name}?x=1"), 200,
                  batch(res, '{"d":' + NOT_IN_BATCH + "}", times)))  # fmt: skip
add(post_json("batch-unknown-method", f"{HOOK}/batch", cmd(a=f"{ACT}?flowId=5", u="no.such"),
              200, batch(res, '{"u":' + NOTFOUND + "}", times)))  # fmt: skip
add(post_json("batch-lower-case-flow", f"{HOOK}/batch",
              cmd(a=f"{ACT}?flowId=5", u="tasks.flow.flow.pin?flowId=1"), 200,
              batch(res, '{"u":' + NOTFOUND + "}", times)))  # fmt: skip
add(post_json("batch-missing-flowid", f"{HOOK}/batch", cmd(a=f"{ACT}?flowId=5", m=ACT), 200,
              batch(res, '{"m":' + MISSING + "}", times)))  # fmt: skip
add(post_json("batch-skips-non-string", f"{HOOK}/batch",
              '{"cmd":{"a":"' + ACT + '?flowId=5","o":{"method":"' + ACT + '"}}}', 200,
              batch(res, "[]", times)))  # fmt: skip
add(post_json("batch-fragment-dropped", f"{HOOK}/batch", cmd(a=f"{ACT}?flowId=5#frag"), 200,
              batch(res, "[]", times)))  # fmt: skip
# $result references (§3.3; §10's example): the reference runs to the next whitespace; a
# value that is exactly one reference takes the value as it is, one inside longer text is
# replaced by the string of it; the state is looked up by the name as written ($RESULT finds
# nothing: PHP array keys are case-sensitive, the regex is not).
get_then = '{"a":' + FLOW3 + ',"b":true}'
times_ab = '{"a":' + T + ',"b":' + T + "}"
only_a = '{"a":' + FLOW3 + "}"
times_a = '{"a":' + T + "}"
for id_, ref, out in (
    ("batch-ref-whole", "$result[a][id]", None),
    ("batch-ref-swallows-text-after", "$result[a][id]0", None),  # §10: binds 3, not 30
    ("batch-ref-upper-is-null", "$RESULT[a][id]", invalid("")),
    ("batch-ref-embedded-after-text", "x$result[a][id]", invalid("x3")),
    ("batch-ref-embedded-before-space", "$result[a][id] 0", invalid("3 0")),
    ("batch-ref-upper-embedded-stays", "x$RESULT[a][id]", invalid("x$RESULT[a][id]")),
    ("batch-ref-without-key-stays", "$result", invalid("$result")),
):
    add(post_json(id_, f"{HOOK}/batch",
                  cmd(a=f"{GET}?flowId=3", b=f"{ACT}?flowId={quote(ref)}"), 200,
                  batch(get_then, "[]", times_ab) if out is None
                  else batch(only_a, '{"b":' + out + "}", times_a)))  # fmt: skip
exists_then = '{"a":' + FLOW3 + ',"b":{"exists":true}}'
add(post_json("batch-ref-embedded-in-a-name", f"{HOOK}/batch",
              cmd(a=f"{GET}?flowId=3",
                  b="tasks.flow.Flow.isExists?flowData[name]=" + quote("Flow $result[a][id]")),
              200, batch(exists_then, "[]", times_ab)))  # fmt: skip
add(
    post_form(
        "batch-form-encoded",
        f"{HOOK}/batch",
        "halt=0&cmd[a]=" + quote(f"{ACT}?flowId=5", safe=""),
        200,
        batch(res, "[]", times),
    )
)
add(post_form("batch-form-halt-false-is-on", f"{HOOK}/batch",
              "halt=false&cmd[x]=" + quote(f"{ACT}?flowId=9", safe="") + "&cmd[a]="
              + quote(f"{ACT}?flowId=5", safe=""), 200,
              batch("[]", '{"x":' + NOFLOW + "}")))  # fmt: skip
add(post_form("batch-form-halt-zero-string", f"{HOOK}/batch",
              "halt=0&cmd[x]=" + quote(f"{ACT}?flowId=9", safe="") + "&cmd[a]="
              + quote(f"{ACT}?flowId=5", safe=""), 200,
              batch(res, '{"x":' + NOFLOW + "}", times)))  # fmt: skip
add(Case("batch-oauth", "POST", "/rest/batch", 200, batch(res, "[]", times),
         body=cmd(a=f"{ACT}?flowId=5"), headers=bearer()))  # fmt: skip
add(post_json("batch-scope-per-command", f"{HOOK}/batch", cmd(a=f"{ACT}?flowId=5"), 200,
              batch("[]", '{"a":' + err("insufficient_scope", "") + "}"),
              config={"webhook_scopes": frozenset({"crm"})}))  # fmt: skip
add(post_json("batch-wrong-code", f"{BAD}/batch", cmd(a=f"{ACT}?flowId=5"), 401, CREDS))
add(post_json("batch-suffix-and-slash", f"{HOOK}/batch.json/", cmd(a=f"{ACT}?flowId=5"), 200,
              batch(res, "[]", times)))  # fmt: skip
# The suffix (§1.1) under the lowercase-first rule (§1.3, rest.server component): the
# lowercase try strips ".json"/".xml" and finds batch; a CamelCase flow method is found only
# as sent, where "JSON"/"XML" is no transport (compared exactly), and the XML transport of the
# failed lowercase try is kept. A batch command's method is its path as it is: no suffix.
add(post_json("batch-upper-json-suffix", f"{HOOK}/batch.JSON", cmd(a=f"{ACT}?flowId=5"), 200,
              batch(res, "[]", times)))  # fmt: skip
add(post_json("batch-upper-xml-suffix", f"{HOOK}/batch.XML", cmd(a=f"{ACT}?flowId=5"), 200,
              "<response><result><result><a>1</a></result><result_error></result_error>"
              "<result_total></result_total><result_next></result_next><result_time><a>"
              + XT[len("<time>"):-len("</time>")] + "</a></result_time></result>" + XT
              + "</response>", ctype=XML))  # fmt: skip
add(post_json("act-upper-json-suffix", f"{HOOK}/{ACT}.JSON", '{"flowId":1}', 404, NOTFOUND))
add(post_json("act-upper-xml-suffix-in-xml", f"{HOOK}/{ACT}.XML", '{"flowId":1}', 404,
              "<response><error>ERROR_METHOD_NOT_FOUND</error><error_description>Method "
              "not found!</error_description></response>", ctype=XML))  # fmt: skip
add(post_json("batch-command-suffix-not-stripped", f"{HOOK}/batch",
              cmd(a=f"{ACT}.json?flowId=5", b=f"{ACT}.JSON?flowId=5"), 200,
              batch("[]", '{"a":' + NOTFOUND + ',"b":' + NOTFOUND + "}")))  # fmt: skip

# -- bodies and content types (§1.2) --------------------------------------------------------
add(Case("multipart-form", "POST", f"{HOOK}/{ACT}", 200, TRUE,
         body=b'--BOUNDARY\r\nContent-Disposition: form-data; name="flowId"\r\n\r\n2\r\n'
              b"--BOUNDARY--\r\n",
         headers={"Content-Type": "multipart/form-data; boundary=BOUNDARY"}))  # fmt: skip
add(Case("json-type-wrong-case", "POST", f"{HOOK}/{ACT}", 400, MISSING, body='{"flowId":2}',
         headers={"Content-Type": "Application/JSON"}))  # fmt: skip
add(Case("text-plain-form-body", "POST", f"{HOOK}/{ACT}", 200, TRUE, body="flowId=2",
         headers={"Content-Type": "text/plain"}))  # fmt: skip
add(post_json("json-broken", f"{HOOK}/{ACT}", '{"flowId":', 400, MISSING))
add(post_json("json-broken-query-kept", f"{HOOK}/{ACT}?flowId=2", '{"flowId":', 200, TRUE))
add(post_json("json-not-object", f"{HOOK}/{ACT}", "2", 400, MISSING))
add(post_form("form-nested-params", f"{HOOK}/tasks.flow.Flow.isExists",
              "flowData[name]=Flow%203&flowData[id]=3", 200,
              '{"result":{"exists":false},"time":' + T + "}"))  # fmt: skip
add(Case("verb-put-refused", "PUT", f"{HOOK}/{ACT}", 405,
         err("ERROR_METHOD_NOT_ALLOWED", "Method Not Allowed"), body='{"flowId":1}',
         headers={"Content-Type": "application/json"}))  # fmt: skip

# -- the OAuth token endpoint (§5, §10) -----------------------------------------------------
GOOD = (
    '{"access_token":"TOKEN","expires":E,"expires_in":3600,"scope":"task",'
    '"domain":"oauth.bitrix.info","server_endpoint":"https:\\/\\/oauth.bitrix.info\\/rest\\/",'
    '"status":"L","client_endpoint":"SCHEME:\\/\\/HOST\\/rest\\/","member_id":"emulator-member-id",'
    '"user_id":1,"refresh_token":"TOKEN"}'
)
REFRESH = ("grant_type=refresh_token&client_id=local.emulator.app"
           "&client_secret=emulator-client-secret&refresh_token={REFRESH}")  # fmt: skip
add(post_form("token-refresh-post", "/oauth/token/", REFRESH, 200, GOOD))
add(Case("token-refresh-get", "GET", "/oauth/token/?" + REFRESH, 200, GOOD))
add(Case("token-refresh-no-slash", "GET", "/oauth/token?" + REFRESH, 200, GOOD))
add(post_form("token-refresh-spent", "/oauth/token/", REFRESH, 400, '{"error":"invalid_grant"}',
              before=1))  # fmt: skip
add(post_form("token-unknown-refresh", "/oauth/token/",
              REFRESH.replace("{REFRESH}", "0123456789abcdef0123456789abcdef"), 400,
              '{"error":"invalid_grant"}'))  # fmt: skip
add(
    post_form(
        "token-wrong-client-id",
        "/oauth/token/",
        REFRESH.replace("local.emulator.app", "other.app"),
        200,
        '{"error":"wrong_client"}',
    )
)
add(post_form("token-wrong-secret", "/oauth/token/", REFRESH.replace("emulator-client", "bad"),
              400, '{"error":"invalid_client"}'))  # fmt: skip
add(post_form("token-no-refresh-token", "/oauth/token/",
              "grant_type=refresh_token&client_id=local.emulator.app"
              "&client_secret=emulator-client-secret", 400,
              err("invalid_request",
                  "No \\u0022refresh_token\\u0022 parameter found")))  # fmt: skip
# grant_type missing or empty (not in protocol.md; Bitrix's OAuth module checks it first):
NOGRANT = err("invalid_request", "Invalid grant_type parameter or parameter missing")
NOGRANT_BODY = REFRESH.replace("grant_type=refresh_token&", "")
add(post_form("token-no-grant-type", "/oauth/token/", NOGRANT_BODY, 400, NOGRANT))
add(Case("token-no-grant-type-get", "GET", "/oauth/token/?" + NOGRANT_BODY, 400, NOGRANT))
add(post_form("token-empty-grant-type", "/oauth/token/", "grant_type=&" + NOGRANT_BODY, 400,
              NOGRANT))  # fmt: skip
add(post_form("token-no-parameters", "/oauth/token/", "", 400, NOGRANT))
add(post_form("token-other-grant-type", "/oauth/token/",
              REFRESH.replace("=refresh_token&", "=password&", 1), 400,
              '{"error":"unsupported_grant_type"}'))  # fmt: skip
add(post_form("token-old-access-token-void", f"/rest/{ACT}", '{"flowId":1}', 401, BADTOKEN))


def normalise(text: str) -> str:
    text = re.sub(r'"(start|finish|duration|processing)":-?[0-9][0-9.eE+-]*', r'"\1":N', text)
    text = re.sub(r'"date_(start|finish)":"[^"]*"', r'"date_\1":"D"', text)
    text = re.sub(r'"operating_reset_at":\d+', '"operating_reset_at":R', text)
    text = re.sub(r'"expires":\d+', '"expires":E', text)
    text = re.sub(r"<(start|finish|duration|processing)>[^<]*<", r"<\1>N<", text)
    text = re.sub(r"<date_(start|finish)>[^<]*<", r"<date_\1>D<", text)
    text = re.sub(r"<operating_reset_at>\d+<", "<operating_reset_at>R<", text)
    text = re.sub(r"https?:\\/\\/127\.0\.0\.1:\d+", "SCHEME:\\/\\/HOST", text)
    return re.sub(r"\b[0-9a-f]{32}\b", "TOKEN", text)


def test_the_table_is_large_enough_and_unique() -> None:
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_golden(case: Case) -> None:
    if case.tls:
        pytest.importorskip("trustme")
    config: dict[str, Any] = {"flows": 600, "missing": frozenset({9}), "leak": None, **case.config}
    server = EmulatorServer(Portal(PortalConfig(**config)), tls=case.tls)
    async with server:
        issued = server.state.issue_tokens()
        expired = server.state.issue_tokens()
        server.state.access_tokens[expired["access_token"]].expires_at = 0
        if case.id == "token-old-access-token-void":
            # After a refresh, the access token issued with the spent refresh token is void.
            server.state.refresh("local.emulator.app", "emulator-client-secret",
                                 issued["refresh_token"])  # fmt: skip
        values: dict[str, str] = {
            "{TOKEN}": issued["access_token"],
            "{EXPIRED}": expired["access_token"],
            "{REFRESH}": issued["refresh_token"],
        }
        fill: Callable[[str], str] = lambda text: _fill(text, values)  # noqa: E731
        base = server.plain_url if case.plain else server.base_url
        headers = {k: fill(v) for k, v in case.headers.items()}
        if case.id == "token-old-access-token-void":
            headers = bearer(issued["access_token"])
        body = case.body
        if isinstance(body, str):
            body = fill(body).encode()
        ssl_context = server.ssl_context() if case.tls else None
        connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context else None
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(case.before + 1):
                async with session.request(
                    case.verb,
                    base + fill(case.path),
                    data=body,
                    headers=headers,
                    skip_auto_headers=["Content-Type"],
                ) as response:
                    raw = await response.read()
                    status = response.status
                    ctype = response.headers.get("Content-Type", "")
    assert (status, ctype) == (case.status, case.ctype), raw[:300]
    assert normalise(raw.decode()) == case.body_out


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text
