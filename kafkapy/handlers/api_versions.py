"""ApiVersions (key 18): what this broker implements, computed from the handler registry."""

import re

from kafkapy.handlers import api
from wire.messages import api_versions_response as R
from wire.messages.error_codes import ErrorCode

# Kafka's ApiVersionsRequest.SOFTWARE_NAME_VERSION_PATTERN (KIP-511)
_SOFTWARE = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?")


@api("ApiVersions", 0, 4)
async def handle(ctx, req):
    if ctx.api_version >= 3 and not (_SOFTWARE.fullmatch(req.client_software_name or "")
                                     and _SOFTWARE.fullmatch(req.client_software_version or "")):
        # ApiVersionsRequest.isValid fails: INVALID_REQUEST with no api list, as Kafka answers
        return R.ApiVersionsResponse(error_code=ErrorCode.INVALID_REQUEST, api_keys=[], throttle_time_ms=0)
    return ctx.broker.api_versions_response()
