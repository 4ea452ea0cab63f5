;; The keep's own answers where WASI hosts differ: unsupported calls are ENOSYS (never a crash),
;; bad pointers EFAULT, an unknown clock EINVAL. One byte per call ('A' + errno), then a newline.
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_seek" (func $fd_seek (param i32 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sched_yield" (func $sched_yield (result i32)))
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
    (call $record (call $path_open (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 1)
                                   (i32.const 0) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 0)))
    (call $record (call $fd_close (i32.const 1)))
    (call $record (call $fd_seek (i32.const 1) (i64.const 0) (i32.const 0) (i32.const 0)))
    (call $record (call $poll_oneoff (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
    (call $record (call $sched_yield))
    (call $record (call $sock_shutdown (i32.const 0) (i32.const 0)))
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
