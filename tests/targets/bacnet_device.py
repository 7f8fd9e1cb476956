"""A bacpypes3 0.0.110 BACnet/IP device on 127.0.0.1, for integration tests.

Third-party code is the point: the BACnet module is proven against a stack we did not write. The
application's address is `127.0.0.1/32:PORT`, so its broadcast address is its own unicast
address and nothing it sends ever leaves loopback. Objects:

    device,<instance>    vendor "otfuzz test lab", model "bacpypes3 test device", firmware 0.0.110
    analog-value,1       present-value 1.5 (read by the health probe)
    analog-value,2       present-value 0.0, commandable, with a description: the write templates' target
    binary-value,1       present-value active
    file,1               a stream file of 256 octets (0x00..0xFF), served by AtomicReadFile

DeviceCommunicationControl needs the password `DCC_PASSWORD`, which no template carries: a fuzzed
DCC is refused with Error security/password-failure and cannot silence the device for the rest
of a campaign. bacpypes3 has no AtomicReadFile or ReinitializeDevice service of its own; the
AtomicReadFile handler below only hands the decoded request's octets back in bacpypes3's own
AtomicReadFileACK (ReinitializeDevice stays unimplemented: bacpypes3 rejects it as an
unrecognized service). Prints READY once its socket is bound and serves until killed.

    python tests/targets/bacnet_device.py --port 47808 --instance 999
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from bacpypes3.apdu import AtomicReadFileACK, AtomicReadFileRequest
from bacpypes3.app import Application
from bacpypes3.basetypes import AtomicReadFileACKAccessMethodChoice, AtomicReadFileACKAccessMethodStreamAccess
from bacpypes3.errors import ExecutionError
from bacpypes3.local.analog import AnalogValueObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryValueObject
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.object import FileObject
from bacpypes3.service.device import DeviceCommunicationControlServices

DEFAULT_INSTANCE = 999
VENDOR_NAME = "otfuzz test lab"
MODEL_NAME = "bacpypes3 test device"
FIRMWARE_REVISION = "0.0.110"
DCC_PASSWORD = "not-in-any-template"
FILE_CONTENT = bytes(range(256))


class TestDevice(Application, DeviceCommunicationControlServices):
    async def do_AtomicReadFileRequest(self, apdu: AtomicReadFileRequest) -> None:
        obj = self.get_object_id(apdu.fileIdentifier)
        if not isinstance(obj, FileObject):
            raise ExecutionError(errorClass="object", errorCode="unknownObject")
        stream = apdu.accessMethod.streamAccess
        if stream is None:
            raise ExecutionError(errorClass="services", errorCode="invalidFileAccessMethod")
        start, count = stream.fileStartPosition, stream.requestedOctetCount
        if not 0 <= start <= len(FILE_CONTENT):
            raise ExecutionError(errorClass="services", errorCode="invalidFileStartPosition")
        data = FILE_CONTENT[start : start + count]
        ack = AtomicReadFileACK(
            context=apdu,
            endOfFile=start + len(data) >= len(FILE_CONTENT),
            accessMethod=AtomicReadFileACKAccessMethodChoice(
                streamAccess=AtomicReadFileACKAccessMethodStreamAccess(fileStartPosition=start, fileData=data)
            ),
        )
        await self.response(ack)


def build(port: int, instance: int) -> TestDevice:
    device = DeviceObject(
        objectIdentifier=("device", instance),
        objectName=f"otfuzz-device-{instance}",
        vendorIdentifier=999,
        vendorName=VENDOR_NAME,
        modelName=MODEL_NAME,
        firmwareRevision=FIRMWARE_REVISION,
    )
    device._dcc_password = DCC_PASSWORD
    network_port = NetworkPortObject(
        f"127.0.0.1/32:{port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1",
        networkNumberQuality="unknown",
    )
    app = TestDevice.from_object_list([device, network_port])
    app.add_object(AnalogValueObject(objectIdentifier=("analog-value", 1), objectName="probe-value", presentValue=1.5,
                                     statusFlags=[0, 0, 0, 0], covIncrement=0.1, units="degreesCelsius"))
    app.add_object(AnalogValueObjectCmd(objectIdentifier=("analog-value", 2), objectName="setpoint", presentValue=0.0,
                                        relinquishDefault=0.0, statusFlags=[0, 0, 0, 0], covIncrement=0.1,
                                        units="degreesCelsius", description="written by the tests"))
    app.add_object(BinaryValueObject(objectIdentifier=("binary-value", 1), objectName="switch", presentValue="active",
                                     statusFlags=[0, 0, 0, 0]))
    app.add_object(FileObject(objectIdentifier=("file", 1), objectName="log", fileType="application/octet-stream",
                             fileSize=len(FILE_CONTENT), archive=False, readOnly=True, fileAccessMethod="streamAccess"))
    return app


async def serve(port: int, instance: int) -> None:
    app = build(port, instance)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for _ in range(500):  # bounded: the link layer binds its socket within a few loop turns
        if all(layer.server.local_transport is not None for layer in app.link_layers.values()):
            break
        await asyncio.sleep(0.01)
    print("READY", flush=True)
    await stop.wait()
    app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--instance", type=int, default=DEFAULT_INSTANCE)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.instance))


if __name__ == "__main__":
    main()
