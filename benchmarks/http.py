"""Load an HTTP endpoint with wrk and read its figures back.

wrk (Debian package `wrk`) is a C load generator: it keeps up with far more requests per second
than these servers can answer here, so the numbers are the server's, not the client's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import Result
from kiki.errors import FailedPrecondition

# wrk's default of 2 s would drop slow but successful answers (a batch of 1,000 takes 1-2 s
# here under load) and cut the latency figures short: only past this is a request failed
REQUEST_TIMEOUT_S = 30

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "{key}"
math.randomseed(os.time())
local function item()
  return string.format([[{item}]], math.random({low}, {high}))
end
request = function()
  local body
  if {per_request} == 1 and "{wrapper}" == "" then
    body = item()
  else
    local parts = {{}}
    for i = 1, {per_request} do parts[i] = item() end
    body = '{{"{wrapper}":[' .. table.concat(parts, ",") .. ']}}'
  end
  return wrk.format(nil, "{path}", nil, body)
end
"""


@dataclass(frozen=True)
class Load:
    """What one wrk run POSTs: `item` is a JSON object with one %05d filled with a random
    number in [low, high]; with `wrapper`, `per_request` items go in `{"wrapper": [...]}`."""

    label: str
    path: str
    item: str
    low: int
    high: int
    per_request: int = 1
    wrapper: str = ""


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise FailedPrecondition("this benchmark needs wrk: install it with `apt-get install wrk`")
    return path


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    name: str,
    url: str,
    load: Load,
    api_key: str,
    *,
    prefix: str = "",
    seconds: float,
    connections: int = 32,
    threads: int = 2,
) -> Result:
    """POST `load` to `url + prefix + load.path` for `seconds`; failed requests are not
    counted, and more than a tenth failing is an error."""
    path = prefix + load.path
    script = _LUA.format(
        key=api_key,
        item=load.item,
        low=load.low,
        high=load.high,
        per_request=load.per_request,
        wrapper=load.wrapper,
        path=path,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [
                require_wrk(),
                f"-t{threads}",
                f"-c{connections}",
                f"-d{int(seconds)}s",
                f"--timeout={REQUEST_TIMEOUT_S}s",
                "--latency",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        ).stdout
    finally:
        Path(handle.name).unlink()
    if "Latency Distribution" not in out:
        raise FailedPrecondition(f"wrk gave no latency figures for {url}{path}:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    elapsed = re.search(r"requests in ([\d.]+)(s|m)", out)  # type: ignore[union-attr]
    secs = float(elapsed.group(1)) * (60 if elapsed.group(2) == "m" else 1)  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = int(errors.group(1)) if errors else 0
    failed += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    if failed * 10 > requests:
        raise FailedPrecondition(f"{failed} of {requests} requests to {url}{path} failed:\n{out}")
    note = f"{failed} failed requests not counted" if failed else ""
    return Result(name, requests - failed, secs, p50, p99, note)
