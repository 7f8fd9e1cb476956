"""`otfuzz report`, `bundle`, `verify` and `keygen`: evidence from the command line.

Each handler returns the exit status and raises OtfuzzError for anything the user can fix;
the work is done by `otfuzz.compliance.evidence`, `otfuzz.report.reports` and
`otfuzz.report.bundle`. `verify` exits 0 when the bundle is intact, 1 when it found alterations
(and names them), and 2 (through OtfuzzError) when the bundle or key cannot be used at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from otfuzz.errors import OtfuzzError

EXIT_OK = 0
EXIT_ALTERED = 1


def add_commands(subparsers: Any) -> None:
    from otfuzz.compliance.catalogue import COMPONENT_TYPES
    from otfuzz.report.reports import FORMATS

    report = subparsers.add_parser("report", help="write HTML, PDF, JSON, JUnit or OSCAL reports of a run, with IEC 62443 verdicts")
    report.add_argument("run_dir", type=Path, metavar="RUN", help="run folder")
    report.add_argument("--format", default="json", metavar="LIST",
                        help=f"comma-separated formats: {','.join(FORMATS)} (default json)")
    report.add_argument("--out", type=Path, help="folder for the reports (default RUN/reports)")
    report.add_argument("--component-type", choices=list(COMPONENT_TYPES),
                        help="IEC 62443-4-2 component type; needed for SL-C")
    report.add_argument("--sl-t", metavar="VECTOR", help="target security level per FR, e.g. 2,2,2,1,2,1,3 (or one level for all)")
    report.add_argument("--met-by-other-means", type=Path, metavar="FILE",
                        help="YAML list of requirements met by documentation review or configuration, each with a reference")
    report.add_argument("--operator", help="who ran the test (default: as recorded by the campaign)")
    report.add_argument("--organisation", help="the operator's organisation")
    report.add_argument("--independence", metavar="LEVEL",
                        help="tester independence (IEC 62443-4-1 SVV-5): none, independent-person, "
                             "independent-department, independent-organisation")
    report.add_argument("--system", type=Path, metavar="SYSTEM",
                        help="system model (otfuzz model check): adds the SL gap per zone to the reports")
    report.add_argument("--with-runs", type=Path, nargs="+", default=[], metavar="RUNS",
                        help="with --system: further run or run-plan folders the gap combines with RUN")
    report.add_argument("--baseline", type=Path, metavar="FILE",
                        help="known findings: marked known, and JUnit fails only on the others")
    report.add_argument("--catalogue", type=Path, help=argparse.SUPPRESS)  # for assessors with their own data files
    report.add_argument("--mapping", type=Path, help=argparse.SUPPRESS)
    report.set_defaults(func=cmd_report)

    bundle = subparsers.add_parser("bundle", help="pack a run (store, reports, configuration) into a signed evidence bundle")
    bundle.add_argument("run_dir", type=Path, metavar="RUN", help="run folder")
    bundle.add_argument("--key", type=Path, required=True, help="Ed25519 private key (from otfuzz keygen)")
    bundle.add_argument("--out", type=Path, help="bundle file (default RUN.bundle.tar beside the run folder)")
    bundle.add_argument("--include", type=Path, action="append", default=[], metavar="FILE",
                        help="extra file to pack, e.g. the configuration file or the other-means file (repeatable)")
    bundle.set_defaults(func=cmd_bundle)

    verify = subparsers.add_parser("verify", help="check an evidence bundle's signature and every file in it")
    verify.add_argument("bundle", type=Path, metavar="BUNDLE")
    expected = verify.add_mutually_exclusive_group()
    expected.add_argument("--key", type=Path, help="the public key the bundle must be signed with")
    expected.add_argument("--fingerprint", help="the sha256 fingerprint the signer's key must have")
    verify.set_defaults(func=cmd_verify)

    keygen = subparsers.add_parser("keygen", help="make an Ed25519 key pair for signing evidence bundles")
    keygen.add_argument("--out", type=Path, default=Path("otfuzz-signing"), metavar="PREFIX",
                        help="writes PREFIX.key (private, mode 0600) and PREFIX.pub (default otfuzz-signing)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(func=cmd_keygen)


def write_run_reports(run_dir: Path, formats: list[str] | str, *, out: Path | None = None, component_type: str | None = None,
                      sl_t: str | None = None, other_means: Path | None = None, operator: str | None = None,
                      organisation: str | None = None, independence: str | None = None, system: Path | None = None,
                      with_runs: list[Path] | None = None, catalogue: Path | None = None, mapping: Path | None = None,
                      baseline: Path | None = None) -> None:
    """Write the reports of one run, printing each path and the verdict headline."""
    from otfuzz.compliance.evidence import EvidenceOptions, build_evidence, parse_sl_vector
    from otfuzz.report.reports import parse_formats, write_reports
    from otfuzz.report.results import load_results

    chosen = parse_formats(formats if isinstance(formats, str) else ",".join(formats))
    if not run_dir.is_dir():
        raise OtfuzzError(f"run folder {run_dir} does not exist")
    options = EvidenceOptions(
        component_type=component_type,
        sl_t=parse_sl_vector(sl_t) if sl_t else None,
        other_means_file=other_means,
        operator=operator,
        organisation=organisation,
        independence=independence,
        catalogue_file=catalogue,
        mapping_file=mapping,
    )
    known = None
    if baseline is not None:
        from otfuzz.engine.baseline import load_baseline

        known = load_baseline(baseline)
    results = load_results(run_dir)
    if known is not None:
        from otfuzz.engine.baseline import mark_known

        mark_known(results["findings"], known)
    if with_runs and system is None:
        raise OtfuzzError("--with-runs needs --system (the system model the gap is computed for)")
    if system is not None:
        from otfuzz.compliance.gap import gap_section
        from otfuzz.compliance.system import load_system

        results["system_gap"] = gap_section(load_system(system), [run_dir, *(with_runs or [])])
    evidence = build_evidence(results, options)
    for path in write_reports(results, evidence, chosen, out or run_dir / "reports", catalogue_file=catalogue, mapping_file=mapping):
        print(path)
    print(evidence["summary"]["headline"], file=sys.stderr)


def cmd_report(args: argparse.Namespace) -> int:
    write_run_reports(args.run_dir, args.format, out=args.out, component_type=args.component_type, sl_t=args.sl_t,
                      other_means=args.met_by_other_means, operator=args.operator, organisation=args.organisation,
                      independence=args.independence, system=args.system, with_runs=args.with_runs,
                      catalogue=args.catalogue, mapping=args.mapping, baseline=args.baseline)
    return EXIT_OK


def cmd_bundle(args: argparse.Namespace) -> int:
    from otfuzz.report.bundle import create_bundle

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise OtfuzzError(f"run folder {run_dir} does not exist")
    out = args.out or run_dir.resolve().parent / f"{run_dir.resolve().name}.bundle.tar"
    info = create_bundle(run_dir, args.key, out, extra=args.include)
    print(info.path)
    print(f"{info.files} files, {info.bytes} bytes, signed by Ed25519 {info.fingerprint}", file=sys.stderr)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from otfuzz.report.bundle import verify_bundle

    result = verify_bundle(args.bundle, public_key=args.key, expected_fingerprint=args.fingerprint)
    for line in result.lines():
        print(line)
    return EXIT_OK if result.ok else EXIT_ALTERED


def cmd_keygen(args: argparse.Namespace) -> int:
    from otfuzz.report.bundle import generate_keypair

    private_path, public_path, fp = generate_keypair(args.out, force=args.force)
    print(f"private key: {private_path} (keep it secret)")
    print(f"public key:  {public_path} (give it to whoever verifies your bundles)")
    print(f"fingerprint: {fp}")
    return EXIT_OK
