package system.log

mask contains "/input/ok"

mask contains "/result/allowed"

mask contains {"op": "rename", "path": "/input/x"}
