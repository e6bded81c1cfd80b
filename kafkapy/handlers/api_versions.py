"""ApiVersions (key 18): what this broker implements, computed from the handler registry."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kafkapy.handlers import api
from wire.messages import api_versions_response as R
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import api_versions_request
    from wire.messages import api_versions_response

# Kafka's ApiVersionsRequest.SOFTWARE_NAME_VERSION_PATTERN (KIP-511)
_SOFTWARE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


@api("ApiVersions", 0, 4)
async def api_versions(ctx: RequestContext, req: api_versions_request.ApiVersionsRequest) -> api_versions_response.ApiVersionsResponse:
    """Version notes: v3+ client_software_name/version must match Kafka's pattern (KIP-511), else INVALID_REQUEST with
    no api list, as ApiVersionsRequest.isValid. A version above 4 never reaches here: the server loop answers it at v0
    with UNSUPPORTED_VERSION and these versions.

    Behaviour: Broker.api_versions_response, computed from the handler registry (each handler's @api range).
    """
    if ctx.api_version >= 3 and not (_SOFTWARE.fullmatch(req.client_software_name or "")
                                     and _SOFTWARE.fullmatch(req.client_software_version or "")):
        # ApiVersionsRequest.isValid fails: INVALID_REQUEST with no api list, as Kafka answers
        return R.ApiVersionsResponse(error_code=ErrorCode.INVALID_REQUEST, api_keys=[], throttle_time_ms=0)
    return ctx.broker.api_versions_response()
