;; The largest address an i32 address plus an i32 offset can form (2^33 - 2, in the guard past
;; the 4 GiB index space): a trap, "out of bounds memory access", not a crash.
(module
  (memory (export "memory") 1)
  (func (export "_start")
    (drop (i64.load offset=4294967295 (i32.const 4294967295)))))
