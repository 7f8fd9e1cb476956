"""The loopback plant in three zones that plan, run-plan and agent tests share: a BI host in
the enterprise zone, a gateway in the supervisory zone, a PLC in the control zone behind a
policy relay (Modbus reads only), every asset on 127.0.0.1 with its own port."""

from __future__ import annotations

import textwrap


def three_zone_plant(plc: int, relay: int, gw_service: str, channel_protocol: str, system: str = "Loopback plant",
                     role: str = "integrator") -> str:
    """The system model as YAML; `gw_service` is the gateway's service as a YAML flow mapping."""
    return textwrap.dedent(f"""
        version: 1
        system: {system}
        organisation: {{role: {role}}}
        assets:
          - {{name: bi, address: 127.0.0.1, type: host-device}}
          - {{name: gw, address: 127.0.0.1, type: host-device, services: [{gw_service}]}}
          - {{name: plc, address: 127.0.0.1, type: embedded-device, services: [{{protocol: modbus, port: {plc}}}]}}
        zones:
          - {{name: enterprise, sl_t: [1, 1, 1, 1, 1, 1, 1], assets: [bi]}}
          - {{name: supervisory, sl_t: [2, 2, 2, 1, 2, 1, 2], assets: [gw]}}
          - {{name: control, sl_t: [2, 2, 3, 1, 3, 1, 3], assets: [plc]}}
        conduits:
          - name: ent-sup
            zones: [enterprise, supervisory]
            channels: [{{name: reads, protocol: {channel_protocol}, server: gw, from: enterprise}}]
          - name: sup-ctl
            zones: [supervisory, control]
            channels:
              - {{name: polls, protocol: modbus, server: plc, from: supervisory, via: "127.0.0.1:{relay}", observe: true,
                  policy: {{allow: [1, 2, 3, 4]}}}}
        """).lstrip()
