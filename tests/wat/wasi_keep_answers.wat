;; The keep's own answers where wasmtime traps instead of answering: a pointer outside linear
;; memory is EFAULT, a value outside the spec's enums or flag sets is EINVAL (never a crash);
;; an unknown clock is EINVAL. One byte per call ('A' + errno), then a newline.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_get" (func $fdstat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_get" (func $filestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_advise" (func $advise (param i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $set_flags (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_filestat_set_times" (func $set_times (param i32 i64 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_raise" (func $proc_raise (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_recv" (func $sock_recv (param i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_shutdown" (func $sock_shutdown (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $at (mut i32) (i32.const 1000))
  (func $record (param $errno i32)
    (i32.store8 (global.get $at) (i32.add (i32.const 65) (local.get $errno)))
    (global.set $at (i32.add (global.get $at) (i32.const 1))))
  (func (export "_start")
    ;; EINVAL: values outside the spec's enums and flag sets
    (call $record (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 3) (i32.const 16)))
    (call $record (call $advise (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 6)))
    (call $record (call $set_flags (i32.const 1) (i32.const 0x20)))
    (call $record (call $set_times (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0x10)))
    (call $record (call $proc_raise (i32.const 31)))
    (call $record (call $sock_accept (i32.const 1) (i32.const 0x20) (i32.const 16)))
    (call $record (call $sock_recv (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 16) (i32.const 20)))
    (call $record (call $sock_shutdown (i32.const 1) (i32.const 4)))
    ;; EFAULT: poll's subscriptions, its events, its event count out of bounds
    (call $record (call $poll_oneoff (i32.const 65500) (i32.const 0) (i32.const 1) (i32.const 16)))
    (call $record (call $poll_oneoff (i32.const 0) (i32.const 65520) (i32.const 1) (i32.const 16)))
    (call $record (call $poll_oneoff (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 65534)))
    ;; EFAULT: fdstat and filestat of stdout written past the end of memory
    (call $record (call $fdstat (i32.const 1) (i32.const 65520)))
    (call $record (call $filestat (i32.const 1) (i32.const 65480)))
    ;; EFAULT: the random buffer runs past the end of memory
    (call $record (call $random_get (i32.const 65530) (i32.const 7)))
    ;; EFAULT: an iovec pointing past the end of memory
    (i32.store (i32.const 0) (i32.const 65000))
    (i32.store (i32.const 4) (i32.const 1000))
    (call $record (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    ;; EFAULT: the iovec array itself is out of bounds (length wraps 32 bits when multiplied)
    (call $record (call $fd_write (i32.const 1) (i32.const 8) (i32.const 0x20000001) (i32.const 8)))
    ;; EFAULT: result pointer out of bounds
    (call $record (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 65532)))
    ;; EINVAL: unknown clock
    (call $record (call $clock_time_get (i32.const 99) (i64.const 1) (i32.const 16)))
    ;; EFAULT: argv table out of bounds
    (call $record (call $args_get (i32.const 65535) (i32.const 0)))
    (i32.store8 (global.get $at) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 1000))
    (i32.store (i32.const 4) (i32.sub (i32.add (global.get $at) (i32.const 1)) (i32.const 1000)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
