"""`rollml explorer`: the block explorer of a deployment in the browser.

    rollml explorer --rpc URL --deployment FILE [--host 127.0.0.1] [--port 8080]

Serves the page and its JSON (rollml/explorer/app.py) until Ctrl-C; the page polls the chain every second.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rollml.cli.chain import DeploymentOpt, RpcOpt, connect, load_deployment
from rollml.cli.common import CliError, err_console, errors_as_lines


def explorer_cmd(
    rpc: RpcOpt,
    deployment: DeploymentOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
) -> None:
    """Serve a block explorer of the deployment: requests and results, provers and challengers, every
    dispute drawn round by round with its deadlines, GAN NFT images; it updates live."""
    import uvicorn

    from rollml.core.devnet import port_in_use
    from rollml.explorer.app import create_app

    with errors_as_lines():
        if port_in_use(port, host):
            raise CliError(f"port {port} on {host} is taken: pass another --port")
        dep = load_deployment(deployment)
        app = create_app(connect(rpc), dep)
    err_console.print(f"explorer of {deployment} on http://{host}:{port}/ (Ctrl-C stops)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def attach(app: typer.Typer) -> None:
    """Add `rollml explorer` to the `rollml` app."""
    app.command("explorer")(explorer_cmd)
