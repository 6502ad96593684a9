"""A bounded schemathesis run against the real server on loopback (CPU, tiny model), with the tests
generated from its own /openapi.json: no input gets a 5xx; every answer has a documented status code,
content type and body schema; input the schema forbids is refused; a request's image id comes from
an upload's answer as well as at random. The schema is what clients and generated clients go by, so it
must describe what the server does. Schemathesis runs from a virtual environment of its own
(scripts/setup.sh makes build/schemathesis-venv): its libraries are newer than Debian's fastapi's."""
import os
import subprocess
import threading
import time

import pytest

from conftest import venv_command
from test_server import running_server

pytest.importorskip("fastapi", reason="the server needs fastapi (scripts/setup.sh installs it)")

EXAMPLES = 50     # per operation and phase: 30-45 s of requests here, so that CI's busy cores stay in bounds
SEED = 20261203   # (the same requests every run; a failure names its seed and test case)
TIME_LIMIT = 270  # seconds for the whole run, a hard stop past which the test fails

# Valid by the schema is not always valid for the server, in ways a schema cannot say: a file that is no
# image (415) or past the size limits (413), a click with more points than labels, more grid points than
# the server's budget, or more crop layers than the image has pixels for (422). Schema-valid input may get these codes; a 400 or 405 still fails.
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "413", "415", "422", "429", "5xx"]
"""


def schemathesis_cli():
    return venv_command("schemathesis-venv", "st", "SAMFAST_SCHEMATHESIS")


def test_openapi_schema_holds(samfast_pkg, tiny_checkpoint, tmp_path):
    st = schemathesis_cli()
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    # st in its own environment: none of this interpreter's paths
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    # (segment everything bounded to 8 grid points: the tiny model's CPU decode of a point costs ~50 ms)
    with running_server(samfast_pkg, tiny_checkpoint, "--max-everything-points", "8",
                        env={"OMP_NUM_THREADS": "2"}) as (url, proc):
        # (the server's stderr drained as it comes: a full pipe would stop the server mid-run)
        server_log = []
        drain = threading.Thread(target=lambda: server_log.extend(proc.stderr), daemon=True)
        drain.start()
        cmd = [st, "--config-file", str(tmp_path / "schemathesis.toml"), "run", url + "openapi.json",
               "--checks", "all", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
               "--workers", "1", "--request-timeout", "30", "--generation-database", "none", "--no-color"]
        start = time.monotonic()
        try:
            run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIME_LIMIT)
            output, code = run.stdout + run.stderr, run.returncode
        except subprocess.TimeoutExpired as e:  # (its output so far comes as bytes then)
            output = "".join(o.decode(errors="replace") if isinstance(o, bytes) else o or ""
                             for o in (e.stdout, e.stderr))
            output, code = output + f"\n(stopped after {TIME_LIMIT} s)", None
        seconds = time.monotonic() - start
    drain.join(timeout=10)
    print(output)
    # (less python-multipart's warning for each malformed form it is sent)
    print("server stderr:\n" + "".join(line for line in server_log
                                       if "boundary" not in line and " in header at " not in line)[-8000:])
    what = "found failures" if code is not None else "did not finish"
    assert code == 0, (f"schemathesis {what} in {seconds:.0f} s (st {' '.join(cmd[1:])}; the test's output "
                       f"has its report and the server's stderr):\n{digest(output)}")
    print(f"schemathesis: {EXAMPLES} examples per operation, seed {SEED}: passed in {seconds:.0f} s")


def digest(output):
    """Each failure's operation, check and request as curl (cut short), then schemathesis' summary."""
    end = output.find("=== SUMMARY")
    if end < 0:  # (stopped before its report)
        return output[-4000:]
    lines, after_error = [], False
    for line in output[:end].splitlines():
        text = line.strip()
        if (text.startswith(("___", "- ST", "Received:", "curl ")) or text.endswith(" Error")
                or (after_error and text)):  # (an error's first line says what it is)
            lines.append(text if len(text) < 400 else text[:400] + " ...")
            after_error = text.endswith(" Error")
    return "\n".join(lines) + "\n" + output[end:]
