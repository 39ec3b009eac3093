"""Preprocessing pipelines (scope `documents`): the steps there are, shipped pipelines, checking a
definition and running one over a text or a document's pages. The work is PipelineService's."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from moltbot.gateway.deps import Pipelines
from moltbot.gateway.schemas import PipelineRunRequest, PipelineValidateRequest

router = APIRouter()


@router.get("/v1/pipelines")
async def list_pipelines(pipelines: Pipelines) -> JSONResponse:
    return JSONResponse({"object": "list", "data": pipelines.presets()})


@router.get("/v1/pipelines/steps")
async def list_steps(pipelines: Pipelines) -> JSONResponse:
    steps = [info.to_json() for info in pipelines.registry.describe()]
    unavailable = [{"name": name, "reason": why} for name, why in sorted(pipelines.registry.broken.items())]
    return JSONResponse({"object": "list", "data": steps, "unavailable": unavailable})


@router.post("/v1/pipelines/validate")
async def validate_pipeline(body: PipelineValidateRequest, pipelines: Pipelines) -> JSONResponse:
    pipeline = pipelines.resolve(body.pipeline, body.pipeline_yaml)
    return JSONResponse({"valid": True, "pipeline": pipeline.describe()})


@router.post("/v1/pipelines/run")
async def run_pipeline(body: PipelineRunRequest, pipelines: Pipelines) -> JSONResponse:
    pipeline = pipelines.resolve(body.pipeline, body.pipeline_yaml)
    run = await pipelines.run(pipeline, body.text, body.pages)
    return JSONResponse(
        {
            "object": "pipeline.run",
            "pipeline": pipeline.name,
            "document": run.document.to_json(),
            "report": [report.to_json() for report in run.reports],
            "seconds": round(run.seconds, 6),
        }
    )
