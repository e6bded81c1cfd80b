"""DescribeUserScramCredentials (key 50) and AlterUserScramCredentials (key 51), as Kafka's controller answers them.

Credentials are stored as Kafka stores them: salt, iterations, StoredKey, ServerKey (kafkapy.sasl.ScramStore);
AlterUserScramCredentials receives the client-computed salted password and keeps only the derived keys.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kafkapy import acl
from kafkapy.handlers import api
from kafkapy.sasl import MAX_ITERATIONS, MIN_ITERATIONS, SCRAM_BY_CODE, SCRAM_MECHANISMS, credential_from_salted
from wire.messages import alter_user_scram_credentials_response as AR
from wire.messages import describe_user_scram_credentials_response as DR
from wire.messages.error_codes import ErrorCode

if TYPE_CHECKING:
    from kafkapy.server import RequestContext
    from wire.messages import alter_user_scram_credentials_request
    from wire.messages import alter_user_scram_credentials_response
    from wire.messages import describe_user_scram_credentials_request
    from wire.messages import describe_user_scram_credentials_response

log = logging.getLogger("kafkapy.sasl")


def _authorized(ctx, operation: str) -> bool:
    return acl.cluster_allowed(ctx, acl.OPERATIONS[operation])


@api("DescribeUserScramCredentials", 0, 0)
async def describe_user_scram_credentials(ctx: RequestContext, req: describe_user_scram_credentials_request.DescribeUserScramCredentialsRequest) -> describe_user_scram_credentials_response.DescribeUserScramCredentialsResponse:
    """Version notes: only v0 exists.

    Behaviour: DESCRIBE on the cluster (top-level CLUSTER_AUTHORIZATION_FAILED), as KafkaApis. Null or empty users lists
    every user with credentials; a user asked twice gets DUPLICATE_RESOURCE, one without credentials RESOURCE_NOT_FOUND;
    else its mechanisms and iterations from the ScramStore.
    """
    store = ctx.broker.scram
    if not _authorized(ctx, "DESCRIBE"):
        return DR.DescribeUserScramCredentialsResponse(
            throttle_time_ms=0, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED), error_message=None,
            results=[])
    results = []
    if not req.users:   # null or empty: every user with credentials
        names = sorted(store.users)
        seen_dupes = set()
    else:
        names = [u.name for u in req.users]
        counts = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        seen_dupes = {n for n, c in counts.items() if c > 1}
        names = list(dict.fromkeys(names))
    for name in names:
        if name in seen_dupes:
            results.append(DR.DescribeUserScramCredentialsResult(
                user=name, error_code=int(ErrorCode.DUPLICATE_RESOURCE),
                error_message=f"Cannot describe SCRAM credentials for the same user twice in a single request: "
                              f"{name}", credential_infos=[]))
            continue
        creds = store.users.get(name)
        if not creds:
            results.append(DR.DescribeUserScramCredentialsResult(
                user=name, error_code=int(ErrorCode.RESOURCE_NOT_FOUND),
                error_message=f"Attempt to describe a user credential that does not exist: {name}",
                credential_infos=[]))
            continue
        infos = [DR.CredentialInfo(mechanism=SCRAM_MECHANISMS[m][0], iterations=int(c["iterations"]))
                 for m, c in sorted(creds.items())]
        results.append(DR.DescribeUserScramCredentialsResult(user=name, error_code=0, error_message=None,
                                                             credential_infos=infos))
    return DR.DescribeUserScramCredentialsResponse(throttle_time_ms=0, error_code=0, error_message=None,
                                                   results=results)


@api("AlterUserScramCredentials", 0, 0)
async def alter_user_scram_credentials(ctx: RequestContext, req: alter_user_scram_credentials_request.AlterUserScramCredentialsRequest) -> alter_user_scram_credentials_response.AlterUserScramCredentialsResponse:
    """Version notes: only v0 exists.

    Behaviour: ALTER on the cluster (CLUSTER_AUTHORIZATION_FAILED for every user), as KafkaApis. Every operation is
    checked first (DUPLICATE_RESOURCE, UNACCEPTABLE_CREDENTIAL, UNSUPPORTED_SASL_MECHANISM, RESOURCE_NOT_FOUND for a
    deletion), a failing user's operations are all skipped; the rest go to ScramStore.delete / put (keys derived from
    the salted password), saved once.
    """
    store = ctx.broker.scram
    ops = [("delete", d) for d in req.deletions or ()] + [("upsert", u) for u in req.upsertions or ()]
    users = list(dict.fromkeys(op.name for _, op in ops))
    if not _authorized(ctx, "ALTER"):
        return AR.AlterUserScramCredentialsResponse(throttle_time_ms=0, results=[
            AR.AlterUserScramCredentialsResult(user=u, error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
                                               error_message=None) for u in users])
    errors: dict[str, tuple[int, str]] = {}
    seen: set[tuple[str, int]] = set()
    for kind, op in ops:
        if op.name in errors:
            continue
        if (op.name, op.mechanism) in seen:
            errors[op.name] = (int(ErrorCode.DUPLICATE_RESOURCE),
                               "A user credential cannot be altered twice in the same request")
            continue
        seen.add((op.name, op.mechanism))
        if not op.name:
            errors[op.name] = (int(ErrorCode.UNACCEPTABLE_CREDENTIAL), "Username must not be empty")
        elif op.mechanism not in SCRAM_BY_CODE:
            errors[op.name] = (int(ErrorCode.UNSUPPORTED_SASL_MECHANISM), "Unknown SCRAM mechanism")
        elif kind == "delete" and store.get(op.name, SCRAM_BY_CODE[op.mechanism]) is None:
            errors[op.name] = (int(ErrorCode.RESOURCE_NOT_FOUND),
                               "Attempt to delete a user credential that does not exist")
        elif kind == "upsert" and not MIN_ITERATIONS <= op.iterations <= MAX_ITERATIONS:
            errors[op.name] = (int(ErrorCode.UNACCEPTABLE_CREDENTIAL),
                               f"Iterations {op.iterations} not in the range [{MIN_ITERATIONS}, {MAX_ITERATIONS}]"
                               if op.iterations >= MIN_ITERATIONS else
                               f"Too few iterations: {op.iterations}, minimum {MIN_ITERATIONS}")
        elif kind == "upsert" and (not op.salt or not op.salted_password):
            errors[op.name] = (int(ErrorCode.UNACCEPTABLE_CREDENTIAL), "Salt and salted password must not be empty")
    changed = False
    for kind, op in ops:
        if op.name in errors:
            continue
        mech = SCRAM_BY_CODE[op.mechanism]
        if kind == "delete":
            store.delete(op.name, mech)
            log.info("deleted %s credential of user %s", mech, op.name)
        else:
            store.put(op.name, mech, credential_from_salted(mech, bytes(op.salt), bytes(op.salted_password),
                                                            op.iterations))
            log.info("set %s credential of user %s (%d iterations)", mech, op.name, op.iterations)
        changed = True
    if changed:
        store.save()
    return AR.AlterUserScramCredentialsResponse(throttle_time_ms=0, results=[
        AR.AlterUserScramCredentialsResult(user=u, error_code=errors.get(u, (0, None))[0],
                                           error_message=errors.get(u, (0, None))[1]) for u in users])
