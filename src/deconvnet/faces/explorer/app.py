"""The explorer's HTTP face: JSON and PNG routes over :class:`~.session.Explorer`.

Every error is a 4xx (a 500 if the explorer itself fails) with a one-line JSON body
``{"error": ...}`` that never repeats what the request sent; the model is fixed when the
app is made (no model or file path ever comes from the browser: library images are chosen
by name among the files of ``--images``, and every file route goes through
:func:`~.files.file_inside`). :class:`~.security.Guard` answers only requests for the
explorer's own address and bounds every body while it streams (uploads at ``max_upload``
bytes, other bodies far less); uploads are decoded behind Pillow's decompression-bomb guard
and within a memory budget (:func:`~deconvnet.inputs.budget.decode_within`). No page loads
anything from elsewhere: the API's interactive docs (which pull scripts from a CDN) are
not served, only ``/openapi.json``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, Response, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from deconvnet.engine.rules import DEFAULT_RULE
from deconvnet.errors import DeconvnetError, one_line
from deconvnet.faces.explorer.files import file_inside
from deconvnet.faces.explorer.security import Guard, allowed_hosts
from deconvnet.faces.explorer.session import RULES, Explorer, NotFound
from deconvnet.faces.site.build import display_names, read_scan, unit_url, units_by_layer
from deconvnet.faces.site.measured import CIRCUIT_RULE
from deconvnet.faces.site.sections import read_unit
from deconvnet.figures.topk import image_label
from deconvnet.inputs.budget import ImageTooLargeError
from deconvnet.instruments.circuits import previous_layer

DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024
"""Upload cap in bytes (20 MB)."""
MULTIPART_OVERHEAD = 64 * 1024
"""Room for the multipart envelope around the file in the request's length."""
MAX_ERROR_CHARS = 300
"""Longest error message sent (messages never carry request input; this bounds the rest)."""
READ_CHUNK = 1 << 20
RAW_ENCODINGS = frozenset({"binary", "8bit", "7bit"})
"""Content-Transfer-Encoding values that mean the part holds the file's bytes as they are."""
PNG = "image/png"
IMAGE_ID = r"^[0-9a-f]{16}$"

if TYPE_CHECKING:
    Rule = str
else:
    Rule = Literal[RULES]
"""The rule table's :data:`~.session.RULES`, as a type FastAPI validates and documents."""
ImageId = Annotated[str, PathParam(pattern=IMAGE_ID)]
Channel = Annotated[int, PathParam(ge=0, le=1 << 20)]
Coordinate = Annotated[int | None, Query(ge=0, le=1 << 20)]
Contrast = Literal["layer", "map"]
"""As :data:`~.session.CONTRASTS`."""
View = Literal["whole", "field"]
"""As :data:`~.session.VIEWS`."""


class ErrorBody(BaseModel):
    error: str


class LayerInfo(BaseModel):
    name: str
    module: str
    group: str | None
    channels: int
    height: int
    width: int
    field: str
    classes: bool


class ModelInfo(BaseModel):
    name: str
    input_size: tuple[int, int]
    default_layer: str
    layers: list[LayerInfo]
    rules: list[str]
    activations: str
    images: list[str]
    site: bool
    scanned: list[str]


class ImageInfo(BaseModel):
    id: str
    name: str
    height: int
    width: int


class OpenRequest(BaseModel):
    name: str


class GridInfo(BaseModel):
    layer: str
    channels: int
    height: int
    width: int
    columns: int
    padding: int
    maxima: list[float]
    classes: list[str] | None
    grid_url: str


class TopEntry(BaseModel):
    rank: int
    value: float
    image: str
    projection_url: str
    patch_url: str


class SectionInfo(BaseModel):
    """One section of the unit's page (as ``units/<map>.json`` holds it), its chart's URL."""

    key: str
    title: str
    available: bool
    note: str
    facts: list[list[str]]
    links: list[list[str]]
    picture_url: str | None


class CircuitLink(BaseModel):
    map: int
    share: float
    contribution: float
    unit_page: str | None


class CircuitInfo(BaseModel):
    """The maps of the scanned layer below feeding the clicked unit on this image."""

    upstream_layer: str
    rule: str
    value: float | None
    rest: float | None
    upstream: list[CircuitLink]


class UnitInfo(BaseModel):
    layer: str
    channel: int
    position: tuple[int, int]
    value: float
    box: tuple[int, int, int, int]
    rule: str
    precision: str
    class_name: str | None
    note: str | None
    projection_url: str
    unit_page: str | None
    topk: list[TopEntry]
    sections: list[SectionInfo] = []
    circuit: CircuitInfo | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 404, 413, 415, 422)
}


def create_app(
    explorer: Explorer,
    *,
    scan_dir: Path | None = None,
    site_dir: Path | None = None,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    host: str | None = None,
) -> FastAPI:
    """The explorer app. ``site_dir`` is a built static site (of ``scan_dir``), served at
    ``/site/`` and linked from each unit. ``host`` is the address the server binds: requests
    must name it or a loopback name (:func:`~.security.allowed_hosts`)."""
    app = FastAPI(title="deconvnet explorer", version="1", docs_url=None, redoc_url=None)
    app.add_middleware(
        Guard, hosts=allowed_hosts(host), upload_limit=max_upload + MULTIPART_OVERHEAD
    )
    static = Path(str(resources.files("deconvnet.faces.explorer").joinpath("static")))
    site_static = Path(str(resources.files("deconvnet.faces.site").joinpath("static")))
    scan = read_scan(scan_dir) if scan_dir is not None else None
    scan_units = units_by_layer(scan) if scan is not None else {}
    scan_names = display_names(scan) if scan is not None else {}

    @app.exception_handler(StarletteHTTPException)  # routing's 404/405 too, not only ours
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": one_line(error.detail, MAX_ERROR_CHARS)}, status_code=error.status_code
        )

    @app.exception_handler(Exception)  # the explorer's own failure: still one line of JSON
    async def failure(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": "internal error (see the server's log)"}, 500)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse({"error": one_line(error, MAX_ERROR_CHARS)}, status_code=404)

    @app.exception_handler(DeconvnetError)
    async def bad_input(request: Request, error: DeconvnetError) -> JSONResponse:
        return JSONResponse({"error": one_line(error, MAX_ERROR_CHARS)}, status_code=400)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(static / "index.html")

    @app.get("/static/{name:path}", include_in_schema=False)
    def static_file(name: str) -> FileResponse:
        found = file_inside(static, name) or file_inside(site_static, name)
        if found is None:
            raise HTTPException(404, "no such static file")
        return FileResponse(found)

    @app.get("/site/{name:path}", responses=ERRORS, response_class=FileResponse)
    def site_file(name: str) -> FileResponse:
        """A file of the static site built from the scan."""
        found = file_inside(site_dir, name) if site_dir is not None else None
        if found is None:
            raise HTTPException(404, "no such site file")
        return FileResponse(found)

    @app.get("/api/model", response_model=ModelInfo)
    def model_info() -> ModelInfo:
        """The model fixed at start-up: its layers with maps, the rules, the library."""
        return ModelInfo(
            name=explorer.name,
            input_size=explorer.preprocessing.input_size,
            default_layer=explorer.default_layer,
            layers=[LayerInfo(**vars(layer)) for layer in explorer.layers.values()],
            rules=list(RULES),
            activations=explorer.activations,
            images=explorer.library(),
            site=site_dir is not None,
            scanned=[scan_names.get(module, module) for module in scan_units],
        )

    @app.get("/api/library/{name}", responses=ERRORS, response_class=FileResponse)
    def library_file(name: str) -> FileResponse:
        """An image file of the library, as it is."""
        return FileResponse(_library_path(explorer, name))

    @app.post("/api/open", response_model=ImageInfo, responses=ERRORS)
    def open_image(request: OpenRequest) -> ImageInfo:
        """Open an image of the library by its name."""
        image_id = explorer.add_file(_library_path(explorer, request.name))
        return ImageInfo(**explorer.image(image_id))

    @app.post("/api/upload", response_model=ImageInfo, responses=ERRORS)
    def upload(file: Annotated[UploadFile, File()]) -> ImageInfo:
        """Upload an image (at most the cap); decoded with the bomb guard."""
        encoding = file.headers.get("content-transfer-encoding", "binary").strip().lower()
        if encoding not in RAW_ENCODINGS:
            raise HTTPException(415, "send the file's raw bytes (no transfer encoding)")
        data = bytearray()
        while chunk := file.file.read(READ_CHUNK):
            data += chunk
            if len(data) > max_upload:
                raise HTTPException(413, f"upload larger than {max_upload} bytes")
        if not data:
            raise HTTPException(415, "the upload is empty, not an image")
        try:
            image_id = explorer.add_bytes(bytes(data), Path(file.filename or "upload").name)
        except ImageTooLargeError as error:
            raise HTTPException(413, one_line(error, MAX_ERROR_CHARS)) from error
        except DeconvnetError as error:
            raise HTTPException(415, one_line(error, MAX_ERROR_CHARS)) from error
        return ImageInfo(**explorer.image(image_id))

    @app.get("/api/images/{image_id}", response_model=ImageInfo, responses=ERRORS)
    def image_info(image_id: ImageId) -> ImageInfo:
        return ImageInfo(**explorer.image(image_id))

    @app.get("/api/images/{image_id}/input.png", responses={**ERRORS, 200: {"content": {PNG: {}}}})
    def input_png(image_id: ImageId) -> Response:
        """The image as the network saw it (resized/cropped)."""
        return Response(explorer.input_png(image_id), media_type=PNG)

    @app.get(
        "/api/images/{image_id}/layers/{layer:path}/grid.png",
        responses={**ERRORS, 200: {"content": {PNG: {}}}},
    )
    def grid_png(image_id: ImageId, layer: str, contrast: Contrast = "layer") -> Response:
        """All maps of the layer as one grid: one grey scale for the layer, or per map."""
        _, png = explorer.grid(image_id, layer, contrast)
        return Response(png, media_type=PNG)

    @app.get(
        "/api/images/{image_id}/layers/{layer:path}/units/{channel}",
        response_model=UnitInfo,
        responses=ERRORS,
    )
    def unit(address: Unit) -> UnitInfo:
        """Project one unit (the map's strongest when y/x are not given); its scan top-k."""
        image_id, layer, channel, rule, _ = address
        found = explorer.project(*address)
        query = f"rule={rule}&y={found.position[0]}&x={found.position[1]}"
        module = explorer.layer(layer).module
        in_scan = any(u.channel == channel for u in scan_units.get(module, []))
        page = unit_url(scan_names.get(module, found.layer), channel)
        return UnitInfo(
            layer=found.layer,
            channel=channel,
            position=found.position,
            value=found.value,
            box=found.box,
            rule=rule,
            precision=found.precision,
            class_name=found.class_name,
            note=found.note,
            projection_url=f"/api/images/{image_id}/layers/{found.layer}/units/{channel}/projection.png?{query}",
            unit_page=f"/site/{page}" if in_scan and site_dir else None,
            topk=_topk(scan_units, module, channel) if site_dir else [],
            sections=_sections(site_dir, page) if in_scan and site_dir else [],
            circuit=_circuit(address, found.position, module) if in_scan else None,
        )

    def _circuit(
        address: UnitAddress, position: tuple[int, int], module: str
    ) -> CircuitInfo | None:
        """The clicked unit's upstream links on this image, from the scanned layer below."""
        upstream = previous_layer(explorer.model, list(scan_units), module)
        if upstream is None:
            return None
        image_id, layer, channel, _, _ = address
        found = explorer.circuit(image_id, layer, channel, CIRCUIT_RULE, position, upstream)
        tracked = {u.channel for u in scan_units.get(upstream, [])}
        shown = scan_names.get(upstream, upstream)
        return CircuitInfo(
            upstream_layer=shown,
            rule=found.rule,
            value=found.activation,
            rest=found.rest,
            upstream=[
                CircuitLink(
                    map=link.map,
                    share=link.share,
                    contribution=link.contribution,
                    unit_page=f"/site/{unit_url(shown, link.map)}"
                    if site_dir and link.map in tracked
                    else None,
                )
                for link in found.upstream
            ],
        )

    @app.get(
        "/api/images/{image_id}/layers/{layer:path}/units/{channel}/projection.png",
        responses={**ERRORS, 200: {"content": {PNG: {}}}},
    )
    def projection_png(address: Unit, view: View = "whole") -> Response:
        """The unit's projection (colours scaled by its largest |value|) over the whole input,
        or its receptive field enlarged."""
        found = explorer.project(*address)
        return Response(found.png if view == "whole" else found.field_png, media_type=PNG)

    # after the routes below it: a layer name may hold '/' (Caffe's fire2/concat)
    @app.get(
        "/api/images/{image_id}/layers/{layer:path}", response_model=GridInfo, responses=ERRORS
    )
    def grid_info(image_id: ImageId, layer: str) -> GridInfo:
        """The layer's maps for the image: geometry of the grid and each map's maximum."""
        info, _ = explorer.grid(image_id, layer)
        url = f"/api/images/{image_id}/layers/{info['layer']}/grid.png"
        return GridInfo(**info, grid_url=url)

    return app


class UnitAddress(NamedTuple):
    """One unit as the unit routes name it: image, layer, map, rule and position (None: the
    map's strongest), in :meth:`Explorer.project`'s order."""

    image_id: str
    layer: str
    channel: int
    rule: str
    position: tuple[int, int] | None


def unit_address(
    image_id: ImageId,
    layer: str,
    channel: Channel,
    rule: Rule = DEFAULT_RULE,
    y: Coordinate = None,
    x: Coordinate = None,
) -> UnitAddress:
    """The parameters of the unit routes, read and checked once."""
    if (y is None) != (x is None):
        raise HTTPException(422, "give both y and x, or neither (the map's maximum)")
    return UnitAddress(image_id, layer, channel, rule, None if y is None or x is None else (y, x))


Unit = Annotated[UnitAddress, Depends(unit_address)]


def _library_path(explorer: Explorer, name: str) -> Path:
    listed = name in explorer.library()
    found = file_inside(explorer.images_dir, name) if explorer.images_dir and listed else None
    if found is None:
        raise HTTPException(404, "no such library image")
    return found


def _sections(site_dir: Path, page: str) -> list[SectionInfo]:
    """The unit's sections as the site wrote them beside its page (read back validated);
    none when the site has no record for it."""
    found = file_inside(site_dir, page.removesuffix(".html") + ".json")
    if found is None:
        return []
    return [
        SectionInfo(
            key=section["key"],
            title=section["title"],
            available=section["available"],
            note=section["note"],
            facts=section["facts"],
            links=[[text, f"/site/{url}"] for text, url in section["links"]],
            picture_url=f"/site/{section['picture']}" if section["picture"] else None,
        )
        for section in read_unit(found)["sections"]
    ]


def _topk(scan_units: dict[str, Any], layer: str, channel: int) -> list[TopEntry]:
    for unit in scan_units.get(layer, []):
        if unit.channel == channel:
            return [
                TopEntry(
                    rank=int(e["rank"]),
                    value=float(e["value"]),
                    image=image_label(str(e["image"])),
                    projection_url=f"/site/{e['tile_file']}",
                    patch_url=f"/site/{e['patch_file']}",
                )
                for e in unit.entries
            ]
    return []
