"""Field drivers: one package per protocol, each split codec / transport / driver."""
