;; Prints the errno of WASI calls whose answer is the same in any WASI host with no preopens:
;; one byte per call ('A' + errno), then a newline.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fd_fdstat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_res_get" (func $clock_res_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $at (mut i32) (i32.const 1000))
  (func $record (param $errno i32)
    (i32.store8 (global.get $at) (i32.add (i32.const 65) (local.get $errno)))
    (global.set $at (i32.add (global.get $at) (i32.const 1))))
  (func (export "_start")
    (call $record (call $fd_prestat_get (i32.const 3) (i32.const 100)))        ;; EBADF
    (call $record (call $fd_prestat_get (i32.const 0) (i32.const 100)))        ;; EBADF
    (call $record (call $fd_prestat_dir_name (i32.const 3) (i32.const 100) (i32.const 10)))
    (call $record (call $fd_fdstat_get (i32.const 1) (i32.const 128)))         ;; 0
    (call $record (call $fd_fdstat_get (i32.const 9) (i32.const 128)))         ;; EBADF
    (call $record (call $fd_write (i32.const 9) (i32.const 0) (i32.const 0) (i32.const 100)))
    (call $record (call $random_get (i32.const 200) (i32.const 64)))          ;; 0
    (call $record (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 304))) ;; 0
    (call $record (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 304))) ;; 0
    (call $record (call $clock_res_get (i32.const 1) (i32.const 304)))        ;; 0
    (call $record (call $args_sizes_get (i32.const 400) (i32.const 404)))     ;; 0
    ;; random bytes: not all 64 zero (print '1' if any non-zero)
    (call $record (call $any_nonzero (i32.const 200) (i32.const 64)))
    ;; clock: monotonic time is not zero
    (call $record (i64.ne (i64.load (i32.const 304)) (i64.const 0)))
    (i32.store8 (global.get $at) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 1000))
    (i32.store (i32.const 4) (i32.sub (i32.add (global.get $at) (i32.const 1)) (i32.const 1000)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $any_nonzero (param $p i32) (param $n i32) (result i32)
    (local $acc i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i32.or (local.get $acc) (i32.load8_u (local.get $p))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.ne (local.get $acc) (i32.const 0))))
