"""CreateAcls (key 30), DescribeAcls (key 29), DeleteAcls (key 31) on kafkapy.acl.Authorizer.

Without an authorizer (``authorizer.class.name`` unset) they answer SECURITY_DISABLED, as Kafka does. Creating and
deleting needs ALTER on the cluster, describing DESCRIBE on the cluster (CLUSTER_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from wire.messages import create_acls_response as CR
from wire.messages import delete_acls_response as DLR
from wire.messages import describe_acls_response as DR
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import create_acls_request
    from wire.messages import create_acls_response
    from wire.messages import delete_acls_request
    from wire.messages import delete_acls_response
    from wire.messages import describe_acls_request
    from wire.messages import describe_acls_response

log = logging.getLogger("kafkapy.acl")
NO_AUTHORIZER = "No Authorizer is configured on the broker"


@api("CreateAcls", 0, 3)
async def create_acls(ctx: RequestContext, req: create_acls_request.CreateAclsRequest) -> create_acls_response.CreateAclsResponse:
    """Version notes: v0 creates LITERAL bindings; v1+ carry the pattern type.

    Behaviour: see the module docstring for SECURITY_DISABLED and the cluster ACL; each binding is checked
    (acl.validate_binding: INVALID_REQUEST with the reason) and added with Authorizer.add; the bindings are saved once.
    """
    authz = ctx.broker.authorizer
    n = len(req.creations or ())
    if authz is None:
        return CR.CreateAclsResponse(throttle_time_ms=0, results=[
            CR.AclCreationResult(error_code=int(ErrorCode.SECURITY_DISABLED), error_message=NO_AUTHORIZER)] * n)
    if not acl.cluster_allowed(ctx, acl.ALTER):
        return CR.CreateAclsResponse(throttle_time_ms=0, results=[
            CR.AclCreationResult(error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), error_message=None)] * n)
    results = []
    for c in req.creations or ():
        b = acl.AclBinding(c.resource_type, c.resource_name,
                           c.resource_pattern_type if ctx.api_version >= 1 else acl.P_LITERAL,
                           c.principal, c.host, c.operation, c.permission_type)
        why = acl.validate_binding(b)
        if why:
            results.append(CR.AclCreationResult(error_code=int(ErrorCode.INVALID_REQUEST), error_message=why))
            continue
        authz.add(b)
        log.info("ACL created: %s", b)
        results.append(CR.AclCreationResult(error_code=0, error_message=None))
    authz.save()
    return CR.CreateAclsResponse(throttle_time_ms=0, results=results)


def _filter_pattern(ctx, f):
    if ctx.api_version == 0:
        f.pattern_type_filter = acl.P_LITERAL
    return f


@api("DescribeAcls", 0, 3)
async def describe_acls(ctx: RequestContext, req: describe_acls_request.DescribeAclsRequest) -> describe_acls_response.DescribeAclsResponse:
    """Version notes: v0 filters LITERAL bindings only; v1+ pattern_type_filter (ANY, MATCH, LITERAL, PREFIXED).

    Behaviour: see the module docstring for SECURITY_DISABLED and the cluster ACL; INVALID_REQUEST for a filter with
    UNKNOWN elements; else the Authorizer's bindings matching the filter, grouped by resource.
    """
    authz = ctx.broker.authorizer

    def error(code, msg):
        return DR.DescribeAclsResponse(throttle_time_ms=0, error_code=int(code), error_message=msg, resources=[])

    if authz is None:
        return error(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not acl.cluster_allowed(ctx, acl.DESCRIBE):
        return error(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
    f = _filter_pattern(ctx, req)
    why = acl.filter_invalid(f)
    if why:
        return error(ErrorCode.INVALID_REQUEST, why)
    groups: dict[tuple, list] = {}
    for b in authz.bindings:
        if acl.filter_matches(f, b):
            groups.setdefault((b.resource_type, b.resource_name, b.pattern_type), []).append(
                DR.AclDescription(principal=b.principal, host=b.host, operation=b.operation,
                                  permission_type=b.permission_type))
    resources = [DR.DescribeAclsResource(resource_type=rt, resource_name=name, pattern_type=pt, acls=acls)
                 for (rt, name, pt), acls in groups.items()]
    return DR.DescribeAclsResponse(throttle_time_ms=0, error_code=0, error_message=None, resources=resources)


@api("DeleteAcls", 0, 3)
async def delete_acls(ctx: RequestContext, req: delete_acls_request.DeleteAclsRequest) -> delete_acls_response.DeleteAclsResponse:
    """Version notes: v0 filters LITERAL bindings only; v1+ pattern_type_filter.

    Behaviour: see the module docstring for SECURITY_DISABLED and the cluster ACL; per filter, INVALID_REQUEST for
    UNKNOWN elements, else Authorizer.remove of every matching binding, which are answered; saved once.
    """
    authz = ctx.broker.authorizer
    filters = req.filters or ()

    def all_error(code, msg):
        return DLR.DeleteAclsResponse(throttle_time_ms=0, filter_results=[
            DLR.DeleteAclsFilterResult(error_code=int(code), error_message=msg, matching_acls=[]) for _ in filters])

    if authz is None:
        return all_error(ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not acl.cluster_allowed(ctx, acl.ALTER):
        return all_error(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)
    results = []
    for f in filters:
        f = _filter_pattern(ctx, f)
        why = acl.filter_invalid(f)
        if why:
            results.append(DLR.DeleteAclsFilterResult(error_code=int(ErrorCode.INVALID_REQUEST), error_message=why,
                                                      matching_acls=[]))
            continue
        gone = [b for b in authz.bindings if acl.filter_matches(f, b)]
        authz.remove(gone)
        for b in gone:
            log.info("ACL deleted: %s", b)
        results.append(DLR.DeleteAclsFilterResult(error_code=0, error_message=None, matching_acls=[
            DLR.DeleteAclsMatchingAcl(error_code=0, error_message=None, resource_type=b.resource_type,
                                      resource_name=b.resource_name, pattern_type=b.pattern_type,
                                      principal=b.principal, host=b.host, operation=b.operation,
                                      permission_type=b.permission_type) for b in gone]))
    authz.save()
    return DLR.DeleteAclsResponse(throttle_time_ms=0, filter_results=results)
