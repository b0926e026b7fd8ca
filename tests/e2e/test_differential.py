"""The differential bed (tests/differential/bed.py) in command 2: a bounded number of
generated adversarial requests against each official SDK server behind real Envoy +
mcp-authz, with the oracle "what the server executed is permitted by the policy for the
token's scopes; refusals have the decision matrix's status". The long mode is
`tests/differential/bed.py --cases 100000`.

Besides the oracle, each run must have exercised both sides: requests that reached the server
and executed something, and refusals of every kind the generator aims at — a bed that refuses
everything (or allows everything) would pass the oracle while proving nothing.
"""

from __future__ import annotations

import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "differential"))

import bed as bed_mod  # noqa: E402

CASES = int(os.environ.get("MCP_AUTHZ_DIFF_CASES", "1500"))


@pytest.fixture(scope="module", params=["ts", "py"])
def bed(request):
    b = bed_mod.Bed(request.param).start()
    yield b
    b.stop(keep=request.session.testsfailed > 0)


def test_generated_requests_against_the_sdk_server(bed):
    t = bed_mod.run(bed, CASES)
    print(f"\n{bed.server}: {t.cases} cases, {t.allowed} reached the server, "
          f"{t.executed_ops} operations executed, statuses {dict(sorted(t.by_status.items()))}")
    assert not t.violations, "\n".join(t.violations[:30])
    assert t.cases == CASES
    # Both sides exercised: executions checked, and each refusal class seen.
    assert t.executed_ops >= CASES // 50, t
    for status in (400, 401, 403, 404, 415):
        assert t.by_status.get(status, 0) > 0, (status, t.by_status)


@pytest.mark.parametrize("uri", [
    "file:///public/../secret/key",
    "file:///public/%2e%2e/secret/key",
    "file:///public/%2E%2E/secret/vault/x",
    "file:///public/docs/..%2f..%2fsecret/key",
])
def test_traversal_from_a_public_prefix_never_reads_a_secret(bed, uri):
    """The class that was open on main: the TypeScript SDK resolves these to a secret."""
    case = bed_mod.Case(n=10_000_000 + hash(uri) % 1000, path="/mcp",
                        headers={"accept": "application/json, text/event-stream",
                                 "content-type": "application/json"},
                        body=bed_mod.json.dumps({"jsonrpc": "2.0", "id": 1,
                                                 "method": "resources/read",
                                                 "params": {"uri": uri}}).encode(),
                        token_kind="base+one", scopes={bed_mod.BASE, "r:public"}, label=uri)
    bed.direct("DELETE", "/__executed")
    status, _, body = bed.send(case)
    assert status == 400, body
    assert b"not in a form that can be authorized" in body
    assert bed.direct("GET", "/__executed") == []
