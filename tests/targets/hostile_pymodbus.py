"""pymodbus 3.16 (the demo's server) whose device identification holds markup, for escaping tests.

A device controls the strings it reports; a dashboard or report that shows them must show them
as text. The vendor name carries a script element and an image whose error handler would set
`window.__otfuzz_owned`; the product code closes a table cell. Prints READY once listening.

    python tests/targets/hostile_pymodbus.py --port 15020
"""

from __future__ import annotations

VENDOR = '<script>window.__otfuzz_owned=1</script><img src=x onerror="window.__otfuzz_owned=2">'
PRODUCT = "</td></tr></table><b>PM</b>"
IDENTITY = {"VendorName": VENDOR, "ProductCode": PRODUCT, "MajorMinorRevision": "3.16.1"}


if __name__ == "__main__":
    from pymodbus_server import main  # run as a script: this folder is on the path

    main(IDENTITY, __doc__)
