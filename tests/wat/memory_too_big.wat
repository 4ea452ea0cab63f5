;; Asks for 256 MiB of linear memory at instantiation: more than a keep's heap holds (256 MiB of
;; guest RAM in all). Refused at build, naming the numbers, whatever the backend (status 2).
(module
  (memory (export "memory") 4096)
  (func (export "_start")))
