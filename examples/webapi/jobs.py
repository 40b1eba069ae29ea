"""The worker side of the example web API: one handler per job type (see workers.yaml).

Each returns a dict, which the supervisor stores as the job's ``result``; that is what
``GET /jobs/{id}`` shows once the job has ``succeeded``.
"""

from __future__ import annotations

from typing import Any

from supervisor import Context, Message, PermanentError


def write_article(message: Message, ctx: Context) -> dict[str, Any]:
    """An article-writing stand-in. The topic "fail" fails permanently, to show a failed job."""
    payload = message.payload()
    topic, words = payload["topic"], payload["words"]
    if topic.strip().lower() == "fail":
        # PermanentError: retrying cannot help, so the message goes to the DLQ at once and the
        # job ends `failed` with this error instead of `retrying`.
        raise PermanentError(f"cannot write about {topic!r}: the topic asks to fail")
    return {"topic": topic, "words": words, "title": f"{words} words on {topic}"}


def make_thumbnail(message: Message, ctx: Context) -> dict[str, Any]:
    """A thumbnail stand-in: the size of a 16:9 thumbnail of the requested width."""
    payload = message.payload()
    width = payload["width"]
    ctx.logger.info("thumbnail of %s at width %d", payload["image_url"], width)
    return {"image_url": payload["image_url"], "width": width, "height": width * 9 // 16}
