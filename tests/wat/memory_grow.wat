;; Grows memory page by page up to its maximum, writing to the last byte of each new page, then
;; checks that growing past the maximum fails; prints the page counts it saw and a checksum.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1 40)
  (func $out (param $c i32)
    (i32.store8 (i32.const 100) (local.get $c))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 1))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    (local $old i32) (local $sum i32) (local $i i32)
    (loop $grow
      (local.set $old (memory.grow (i32.const 1)))
      (if (i32.ne (local.get $old) (i32.const -1))
        (then
          (i32.store8 (i32.sub (i32.mul (i32.add (local.get $old) (i32.const 1)) (i32.const 65536)) (i32.const 1))
                      (local.get $old))
          (call $out (i32.add (i32.const 48) (i32.rem_u (local.get $old) (i32.const 10))))
          (br $grow))))
    (call $out (i32.const 10))
    (local.set $i (i32.const 1))
    (loop $sum
      (local.set $sum (i32.add (local.get $sum)
        (i32.load8_u (i32.sub (i32.mul (i32.add (local.get $i) (i32.const 1)) (i32.const 65536)) (i32.const 1)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $sum (i32.lt_u (local.get $i) (memory.size))))
    (call $out (i32.add (i32.const 65) (i32.rem_u (local.get $sum) (i32.const 26))))
    (call $out (i32.add (i32.const 48) (i32.eq (memory.grow (i32.const 1)) (i32.const -1))))
    (call $out (i32.const 10))
    ;; past the end now: must trap
    (drop (i32.load (i32.mul (memory.size) (i32.const 65536))))))
