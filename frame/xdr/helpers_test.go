package xdr

import "reflect"

// reflectNew returns a pointer to a new zero value of v's dynamic type.
func reflectNew(v any) any { return reflect.New(reflect.TypeOf(v)).Interface() }
