;; Unbounded recursion with a few locals per frame: must end as "call stack exhausted".
(module
  (func $down (param i64) (result i64)
    (local i64 i64 i64)
    (i64.add (call $down (i64.add (local.get 0) (i64.const 1))) (local.get 0)))
  (func (export "_start") (drop (call $down (i64.const 0)))))
