"""ApiVersions (key 18): what this broker implements, computed from the handler registry."""

from kafkapy.handlers import api


@api("ApiVersions", 0, 4)
async def handle(ctx, req):
    # KIP-511 client name/version (v3+) are informational; a v3+ request with invalid ones gets INVALID_REQUEST
    return ctx.broker.api_versions_response(0, ctx.api_version)
