;; Hello world for a keep: prints a greeting, then its arguments and its environment, one per
;; line (WASI preview 1: args_sizes_get/args_get, environ_sizes_get/environ_get, fd_write).
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; 0..15: iovec and counters; 64..: fixed strings; 1024..: pointer table; 16384..: string data
  (data (i32.const 64) "hello from a keep\n")   ;; 18 bytes
  (data (i32.const 96) "arg: ")                  ;; 5
  (data (i32.const 112) "env: ")                 ;; 5
  (data (i32.const 128) "\n")                    ;; 1

  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))

  (func $strlen (param $p i32) (result i32)
    (local $n i32)
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (i32.add (local.get $p) (local.get $n)))))
        (local.set $n (i32.add (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; Print "<prefix><string>\n" for each of $count pointers at $table.
  (func $print_list (param $prefix i32) (param $table i32) (param $count i32)
    (local $i i32) (local $s i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $s (i32.load (i32.add (local.get $table) (i32.shl (local.get $i) (i32.const 2)))))
        (call $write (local.get $prefix) (i32.const 5))
        (call $write (local.get $s) (call $strlen (local.get $s)))
        (call $write (i32.const 128) (i32.const 1))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next))))

  (func (export "_start")
    (call $write (i32.const 64) (i32.const 18))
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 16384)))
    (call $print_list (i32.const 96) (i32.const 1024) (i32.load (i32.const 16)))
    (drop (call $environ_sizes_get (i32.const 16) (i32.const 20)))
    (drop (call $environ_get (i32.const 1024) (i32.const 16384)))
    (call $print_list (i32.const 112) (i32.const 1024) (i32.load (i32.const 16)))))
