namespace Isr.Storage;
