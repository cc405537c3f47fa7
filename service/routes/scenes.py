"""``GET /scenes/{id}/overview.png``: a whole scene from its COG's overview level, with chips outlined.

The page asks for the scene of a clicked result with ``ids`` = the current results in that scene, so
the outlines show where in the scene the query matched (the first id, the clicked or best one, in a
second colour). The picture is at most ``size`` pixels a side (<= ``MAX_SIDE``): ``out_shape`` makes
GDAL read the overview level nearest that size, never the full-resolution scene.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from PIL import Image, ImageDraw

from rsir.index.scenes import read_window
from rsir.service.chips import ChipRef, chip_of
from rsir.service.errors import ApiError
from rsir.service.overlay import to_png
from rsir.service.routes.admission import authenticate
from rsir.service.routes.images import on_image_thread, served_original
from rsir.service.runtime import runtime
from rsir.service.schemas import ErrorResponse

router = APIRouter(tags=["images"], dependencies=[Depends(authenticate)])
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (401, 403, 404, 422, 429, 500)
}
MAX_SIDE = 2048
MAX_IDS = 200
OUTLINE = (255, 221, 0)  # yellow: the matching chips
FIRST = (0, 229, 255)  # cyan: the first id given (the clicked result)


@router.get(
    "/scenes/{scene_id:path}/overview.png",
    responses={**_ERRORS, 200: {"content": {"image/png": {}}}},
    response_class=Response,
)
async def overview(
    scene_id: str,
    request: Request,
    ids: Annotated[
        str | None,
        Query(
            max_length=20_000,
            description=f"comma-separated chip ids of the scene to outline (<= {MAX_IDS})",
        ),
    ] = None,
    size: Annotated[int, Query(ge=64, le=MAX_SIDE, description="longer side in pixels")] = 1024,
) -> Response:
    """The scene's overview as a PNG, the chips ``ids`` outlined on it."""
    rt = runtime(request)
    index = rt.holder.current
    members = index.scene_chips(scene_id)
    if not members:
        raise ApiError(404, "not_found", f"no scene {scene_id!r} in index version {index.version}")
    wanted = [i for i in (ids or "").split(",") if i]
    if len(wanted) > MAX_IDS:
        raise ApiError(422, "invalid_request", f"ids: at most {MAX_IDS} chips, got {len(wanted)}")
    strangers = [i for i in wanted if i not in members]
    if strangers:
        named = ", ".join(map(repr, strangers[:5]))
        raise ApiError(422, "invalid_request", f"ids: not chips of scene {scene_id!r}: {named}")
    root = rt.settings.archive_root
    first = next(iter(members))
    base = chip_of(index, members[first], first, root)
    if base is None:
        where = f"index version {index.version} does not record where scene {scene_id!r} is"
        raise ApiError(404, "not_found", where)
    outlined = [c for c in (chip_of(index, members[i], i, root) for i in wanted) if c is not None]
    key = ("overview", index.version, scene_id, tuple(wanted), size)
    data = rt.images.get(key)
    if data is None:
        data = await on_image_thread(rt, lambda: _draw(base, outlined, size, index.version))
        rt.images.put(key, data)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _draw(base: ChipRef, chips: list[ChipRef], size: int, version: str) -> bytes:
    scene = base.scene
    with served_original(scene.id, version):
        whole = (0, 0, scene.width, scene.height)
        picture = Image.fromarray(read_window(scene, whole, min(size, max(scene.width, scene.height))).rgb)
    sx, sy = picture.width / scene.width, picture.height / scene.height
    draw = ImageDraw.Draw(picture)
    line = max(1, round(min(picture.size) / 200))
    for n, chip in reversed(list(enumerate(chips))):  # the first drawn last, on top
        col, row, width, height = chip.window
        corners = np.round([col * sx, row * sy, (col + width) * sx - 1, (row + height) * sy - 1])
        draw.rectangle(corners.astype(int).tolist(), outline=FIRST if n == 0 else OUTLINE, width=line)
    return to_png(picture)
