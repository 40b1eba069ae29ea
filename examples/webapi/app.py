"""The web side of the example: record a job, send its message, answer 202 with where to poll.

Run from the repo root: ``uvicorn examples.webapi.app:app``. The config is
``$SQS_SUPERVISOR_CONFIG``, by default this directory's workers.yaml (the workers' own config,
so both sides agree on the queues and the job store).

The routes are plain ``def``: the Producer and the stores block (boto3, SQLite), so FastAPI
runs them in its thread pool instead of stalling the event loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response, status
from pydantic import BaseModel, Field, HttpUrl

from supervisor import EnqueueError, Producer
from supervisor.jobs.producer import CONFIG_ENV
from supervisor.jobs.stores import JobStore, StoreError

DEFAULT_CONFIG = Path(__file__).with_name("workers.yaml")


class ArticleRequest(BaseModel):
    topic: str = Field(min_length=1, max_length=200)
    words: int = Field(ge=50, le=5000)


class ThumbnailRequest(BaseModel):
    image_url: HttpUrl
    width: int = Field(320, ge=16, le=4096)


class Accepted(BaseModel):
    jobId: str
    status_url: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Loaded once per web process; a bad config or a config without a store fails the start-up
    # instead of every request.
    producer = Producer.from_path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    if producer.store is None:
        raise RuntimeError("the example web API needs jobs: {store: ...} in its config")
    app.state.producer = producer
    yield


app = FastAPI(title="sqs-supervisor example web API", lifespan=lifespan)


def get_producer(request: Request) -> Producer:
    return request.app.state.producer


ProducerDep = Annotated[Producer, Depends(get_producer)]


def accept(
    producer: Producer, binding: str, job_type: str, payload: Any, response: Response
) -> Accepted:
    """Enqueue one job and describe the 202; the failures a client can retry later are 503."""
    try:
        job_id = producer.enqueue(binding, payload, job_type=job_type)
    except EnqueueError as exc:
        # The job record exists, marked failed with the same reason; the message does not.
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
    except StoreError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"job store unavailable: {exc}"
        ) from None
    status_url = f"/jobs/{job_id}"
    response.headers["Location"] = status_url
    return Accepted(jobId=job_id, status_url=status_url)


@app.post("/articles", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
def post_article(body: ArticleRequest, producer: ProducerDep, response: Response) -> Accepted:
    """Queue an article; poll ``status_url`` for its result."""
    return accept(producer, "articles", "article", body.model_dump(mode="json"), response)


@app.post("/thumbnails", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted)
def post_thumbnail(body: ThumbnailRequest, producer: ProducerDep, response: Response) -> Accepted:
    """Queue a thumbnail; poll ``status_url`` for its result."""
    return accept(producer, "thumbnails", "thumbnail", body.model_dump(mode="json"), response)


@app.get("/jobs/{job_id}")
def get_job(job_id: str, producer: ProducerDep) -> dict[str, Any]:
    """The job's record: status, attempts, progress, and its result or error once finished."""
    store: JobStore | None = producer.store
    assert store is not None  # lifespan refuses a config without one
    try:
        record = store.get(job_id)
    except StoreError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail=f"job store unavailable: {exc}"
        ) from None
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job {job_id!r}")
    return record.to_dict()
