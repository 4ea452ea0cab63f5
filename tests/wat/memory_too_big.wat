;; Asks for 256 MiB of linear memory at instantiation: more than a keep's heap holds (256 MiB of
;; guest RAM in all). Every backend must refuse it the same way (keep: aborted ..., status 125).
(module
  (memory (export "memory") 4096)
  (func (export "_start")))
