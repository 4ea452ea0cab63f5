;; Exactly one 2 MiB chunk (32 pages, one large page in the keep): the first byte after it traps.
(module
  (memory (export "memory") 32)
  (func (export "_start")
    (i32.store8 (i32.const 2097151) (i32.const 1))
    (i32.store8 (i32.const 2097152) (i32.const 1))))
