;; proc_exit(200): statuses from 126 up must pass through like any other (wasmtime's own WASI
;; refuses them; the keep and the nil backend must not).
(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $proc_exit (i32.const 200))))
