;; A memory of no pages: even address 0 is out of bounds (nothing of the range is mapped).
(module
  (memory (export "memory") 0)
  (func (export "_start")
    (drop (i32.load8_u (i32.const 0)))))
