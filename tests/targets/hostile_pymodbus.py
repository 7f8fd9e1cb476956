"""pymodbus 3.16 (the demo's server) whose device identification holds markup, for escaping tests.

A device controls the strings it reports; a dashboard or report that shows them must show them
as text. The vendor name carries a script element and an image whose error handler would set
`window.__otfuzz_owned`; the product code closes a table cell. Prints READY once listening.

    python tests/targets/hostile_pymodbus.py --port 15020
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from otfuzz.demo import serve

VENDOR = '<script>window.__otfuzz_owned=1</script><img src=x onerror="window.__otfuzz_owned=2">'
PRODUCT = "</td></tr></table><b>PM</b>"
IDENTITY = {"VendorName": VENDOR, "ProductCode": PRODUCT, "MajorMinorRevision": "3.16.1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(serve(args.port, IDENTITY))


if __name__ == "__main__":
    main()
