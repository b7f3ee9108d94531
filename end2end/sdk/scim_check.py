#!/usr/bin/env python3
"""Run the scim2-tester compliance suite against a SCIM 2.0 server.

Usage:
    /root/.cache/idp-venv/bin/python scim_check.py BASE_URL TOKEN [--resource-type User ...]
                                                   [--exclude-tag TAG ...] [--verbose]

    BASE_URL  the SCIM root, e.g. http://127.0.0.1:8080/scim/v2
              (the tester requests <BASE_URL>/ServiceProviderConfig, /ResourceTypes,
              /Schemas, /Users, /Groups, /.search, ...)
    TOKEN     sent as "Authorization: Bearer TOKEN" on every request

Everything is enabled, mutating checks included: the tester POSTs, PUTs, PATCHes
and DELETEs real resources (it deletes what it created, best effort).

Prints one line per check, then the counts. Exit status:
    0  no ERROR/CRITICAL result
    1  at least one ERROR or CRITICAL result (SKIPPED/DEVIATION/... do not fail)
    2  bad usage, or the tester itself crashed

Tested with: scim2-tester 0.5.2, scim2-client 0.13.2, scim2-models 0.12.3, httpx2 2.16.2.
scim2-client 0.13 talks HTTP through httpx2 (the httpx fork), not httpx: its
network engine is scim2_client.engines.httpx2.SyncSCIMClient.
"""

import argparse
import collections
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

FAILING = {Status.ERROR, Status.CRITICAL}


def one_line(text, limit=300):
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base_url")
    parser.add_argument("token")
    parser.add_argument("--resource-type", action="append", default=None,
                        help="only test these resource types (by ResourceType name); default: all discovered")
    parser.add_argument("--exclude-tag", action="append", default=None,
                        help="skip checks with this tag (e.g. patch, crud:delete); default: none")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--verbose", action="store_true", help="also print each result's data on failures")
    args = parser.parse_args(argv)

    # base_url + bearer header live on the httpx2 client; scim2-client appends the
    # endpoint paths (e.g. "/Users") under the base URL's path.
    http = Client(
        base_url=args.base_url.rstrip("/"),
        headers={"Authorization": f"Bearer {args.token}"},
        timeout=args.timeout,
        follow_redirects=False,
    )
    # No provider given: check_server() discovers ServiceProviderConfig,
    # ResourceTypes and Schemas itself and registers the resulting ScimProvider
    # on the client before it runs the resource checks.
    scim = SyncSCIMClient(http)

    try:
        results = check_server(
            scim,
            raise_exceptions=False,     # collect every failure as a result instead of stopping
            include_tags=None,          # None = every check
            exclude_tags=set(args.exclude_tag) if args.exclude_tag else None,
            resource_types=args.resource_type,
        )
    except Exception as exc:  # the tester itself blew up (should not happen with raise_exceptions=False)
        print(f"scim_check: tester crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        http.close()

    counts = collections.Counter()
    width = max((len(r.status.name) for r in results), default=7)
    for r in results:
        counts[r.status.name] += 1
        scope = f"[{r.resource_type}] " if r.resource_type else ""
        tags = ",".join(sorted(t for t in r.tags if t != "*"))
        print(f"{r.status.name:<{width}}  {scope}{r.title}  ({tags})  {one_line(r.reason or '')}")
        if args.verbose and r.status in FAILING and r.data is not None:
            print(f"{'':<{width}}    data: {one_line(repr(r.data), 2000)}")

    order = [s.name for s in Status]
    summary = ", ".join(f"{name}={counts[name]}" for name in order if counts[name])
    failed = sum(counts[s.name] for s in FAILING)
    print(f"\n{len(results)} checks: {summary or 'none'}")
    # The "N passed, N failed" plain closing line CI tooling can read.
    passed = len(results) - failed - counts["SKIPPED"]
    print(f"scim: {passed} passed, {failed} failed, {counts['SKIPPED']} skipped")
    if not results:
        print("scim_check: no result at all", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
