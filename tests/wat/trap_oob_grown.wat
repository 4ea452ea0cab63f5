;; Grows one page past a 2 MiB chunk (33 pages: a large page, then 4 KiB pages), writes and reads
;; the last byte of the last page, prints "ok", then loads 4 bytes that straddle the end: a trap,
;; "out of bounds memory access" (in the keep: a ring-3 fault in the page tables' reserved range).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 32)))
    (i32.store8 (i32.const 2162687) (i32.const 42))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (i32.store8 (i32.const 16) (i32.const 111))
    (i32.store8 (i32.const 17) (i32.add (i32.const 65) (i32.load8_u (i32.const 2162687))))
    (i32.store8 (i32.const 18) (i32.const 10))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (i32.load (i32.const 2162686)))))
