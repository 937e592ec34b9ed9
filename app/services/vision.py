"""Which models see a request's images: the chosen model when it can, else `vision_fallback_model`.

One rule for every surface: the chat turn (which keeps the images and warns when no model can see them) and
the stateless OpenAI-compatible completion (which refuses such a request, as nothing would keep the images).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from app.providers.registry import Candidate


def sees_images(candidate: Candidate) -> bool:
    return candidate.info is not None and candidate.info.capabilities.vision


async def vision_candidates(
    routed: list[Candidate], fallback: str, route: Callable[[str], Awaitable[list[Candidate]]]
) -> list[Candidate] | None:
    """`routed` when its chosen model sees images, else the candidates of `fallback` (the configured vision
    fallback, routed with `route`) when that one does; None when neither can see them."""
    if sees_images(routed[0]):
        return routed
    if fallback:
        vision = await route(fallback)
        if sees_images(vision[0]):
            return vision
    return None
