"""How cafe starts a Ray of its own: bound to loopback, with Ray's token authentication on.

A Ray that `ray.init()` starts listens on the node's IP on every interface (GCS, raylet, workers),
and anyone who reaches the port can run code as this user. Ray binds to 127.0.0.1 only when its
node IP is 127.0.0.1, and it picks that IP only with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, its own
"no cluster" switch: `ray.init(_node_ip_address="127.0.0.1")` is rewritten to the reachable IP.

    prepare_local_ray()              # before `import ray` where possible, always before ray.init()
    ray.init(num_cpus=2, ...)

Token authentication is Ray's default for a Ray that ray.init() starts (Ray >= 2.59, with
`RAY_AUTH_MODE` unset); the token comes from `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or
`~/.ray/auth_token`, which Ray writes when there is none. `RAY_AUTH_MODE=disabled` is honoured on
loopback only. `CAFE_RAY_EXPOSE=1` asks for a Ray other hosts can join (the node's IP); a
`RAY_AUTH_MODE` other than `token` is then refused.

A Ray someone else runs (`RAY_ADDRESS`, a cluster) brings its own settings; this module is only for
the Ray a cafe process starts itself. No ray import here: cafe_core stays light.
"""

from __future__ import annotations

import os
import sys

EXPOSE_VARIABLE = "CAFE_RAY_EXPOSE"
LOOPBACK_VARIABLE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # Ray's name; "0" makes the node IP 127.0.0.1


def exposed() -> bool:
    """Whether the user asked for a local Ray reachable beyond loopback."""
    value = os.environ.get(EXPOSE_VARIABLE, "0").strip().lower()
    if value not in ("0", "1", "false", "true", ""):
        raise ValueError(f"{EXPOSE_VARIABLE}={value!r}: use 1 (reachable from other hosts, token required) or 0")
    return value in ("1", "true")


def prepare_local_ray() -> None:
    """Set this process's environment for the Ray it is about to start: loopback and a token.

    The Ray processes inherit the environment, so this is set once in the process that calls
    ray.init(). RuntimeError when exposure is asked for without token authentication.
    """
    # Left unset, RAY_AUTH_MODE is token for a new local ray.init() (Ray >= 2.59): Ray then also reloads
    # its own cached config, which setting the variable here, after `import ray`, would not do.
    mode = os.environ.get("RAY_AUTH_MODE", "token").strip().lower()
    if exposed():
        if mode != "token":
            raise RuntimeError(
                f"{EXPOSE_VARIABLE}=1 with RAY_AUTH_MODE={mode}: a Ray reachable from other hosts needs "
                "Ray's token authentication; unset RAY_AUTH_MODE (or set it to token), or unset "
                f"{EXPOSE_VARIABLE} for a Ray on 127.0.0.1 only"
            )
        return  # Ray's own choice of node IP
    os.environ[LOOPBACK_VARIABLE] = "0"
    # Ray reads the switch once, when `ray` is first imported; in a process that imported ray before
    # (Ray Data, a test session), the module gets the value the variable would have given it.
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False
