"""Network stress and denial-of-service testing with essential-function monitoring (CR 7.1, 7.2, 7.4).

`patterns` declares the load patterns, levels, profiles and hard ceilings as data; `load` turns a
step of a pattern into traffic; `monitor` keeps doing the essential function in a separate process
and samples a local target's resources; `verdicts` judges what happened against explicit
thresholds; `runner` sequences it all into the evidence store; `commands` is the `otfuzz stress`
command and `report` renders the stress section as an HTML fragment.
"""
