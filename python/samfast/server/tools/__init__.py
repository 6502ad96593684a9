"""The annotation tools' protocols, each a small router over the server's core (core.py), served
where each tool looks for them: a tool is pointed at samfast by its backend's URL alone.

- Label Studio's ML backend at /labelstudio (labelstudio.py)
- CVAT's SAM interactor as a nuclio dashboard at /api/functions... (cvat.py)
- ISAT's SAM backend at /isat/api/... (isat.py)
- X-AnyLabeling's remote server at /xanylabeling/v1/... (xanylabeling.py)

With a token set (--token), every tool's route asks for it in the form that tool can send: a
bearer token, basic auth with the token as the password (Label Studio's ML backend settings; a
user:TOKEN@host URL), or X-AnyLabeling's token header."""
import base64
import binascii

from fastapi import HTTPException, Request

from . import cvat, isat, labelstudio, xanylabeling


def token_check(token):
    """The dependency that checks a tool's request for the server's token (none: every request passes)."""
    accepted = {f"Bearer {token}"}

    async def authorized(request: Request):
        if not token:
            return
        given = request.headers.get("authorization", "")
        if given in accepted or request.headers.get("token") == token:
            return
        if given.startswith("Basic "):
            try:
                if base64.b64decode(given[6:], validate=True).decode().partition(":")[2] == token:
                    return
            except (binascii.Error, UnicodeDecodeError):
                pass
        raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": 'Basic realm="samfast"'})
    return authorized


def include_tools(app, core):
    authorized = token_check(core.config.token)
    for tool in (cvat, isat, labelstudio, xanylabeling):
        app.include_router(tool.router(core, authorized))
